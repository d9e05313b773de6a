// keygate driven by the official openai-node SDK, pointed at it by base URL
// only.  tests/e2e/test_sdk.py runs this once per group of calls:
//
//   node openai_client.mjs '{"base_url": ..., "key": ..., "model": ...,
//                            "steps": ["create", "stream", ...]}'
//
// and reads one JSON object on stdout: for each step its result, or
// {"error": {...}} with the SDK's error class when the call threw.
import OpenAI from 'openai';
import { runSteps } from './steps.mjs';

const plan = JSON.parse(process.argv[2]);

// Every HTTP status the SDK saw, retries included, in order.
const statuses = [];
async function recordingFetch(url, init) {
	const resp = await fetch(url, init);
	statuses.push(resp.status);
	return resp;
}

function client(opts = {}) {
	return new OpenAI({
		baseURL: plan.base_url,
		apiKey: opts.key ?? plan.key,
		maxRetries: opts.maxRetries ?? 2,
		timeout: 60_000,
		fetch: recordingFetch,
		defaultHeaders: opts.headers,
	});
}

// What a caller catching the SDK's exceptions can tell about one.
function describe(err) {
	const out = {
		class: err?.constructor?.name ?? typeof err,
		is_api_error: err instanceof OpenAI.APIError,
		message: String(err?.message ?? err),
	};
	for (const cls of ['AuthenticationError', 'PermissionDeniedError',
	    'RateLimitError', 'BadRequestError', 'UnprocessableEntityError',
	    'NotFoundError', 'InternalServerError', 'APIConnectionError'])
		if (err instanceof OpenAI[cls])
			out.instance_of = cls;
	if (err instanceof OpenAI.APIError) {
		out.status = err.status;
		out.type = err.type;
		out.code = err.code;
		out.error = err.error;
		out.retry_after = err.headers?.get?.('retry-after') ?? null;
	}
	return out;
}

const WEATHER_TOOL = {
	type: 'function',
	function: {
		name: 'get_weather',
		description: 'The weather in a city today.',
		parameters: {
			type: 'object',
			properties: { city: { type: 'string' } },
			required: ['city'],
		},
	},
};

const WEATHER_SCHEMA = {
	type: 'json_schema',
	json_schema: {
		name: 'weather_report',
		strict: true,
		schema: {
			type: 'object',
			properties: {
				city: { type: 'string' },
				temperature_celsius: { type: 'number' },
			},
			required: ['city', 'temperature_celsius'],
			additionalProperties: false,
		},
	},
};

const hello = [{ role: 'user', content: 'Say hello.' }];
const model = plan.model;

const steps = {
	async create() {
		const c = await client().chat.completions.create({ model, messages: hello });
		return {
			id: c.id, object: c.object, model: c.model,
			content: c.choices[0].message.content,
			finish_reason: c.choices[0].finish_reason,
			usage: c.usage, keygate: c.keygate,
		};
	},

	// The loop every quick start shows, without optional chaining.
	async stream() {
		const stream = await client().chat.completions.create({
			model, messages: hello, stream: true,
		});
		let text = '';
		const chunks = [];
		for await (const chunk of stream) {
			chunks.push(chunk);
			text += chunk.choices[0].delta.content ?? '';
		}
		return { text, chunks };
	},

	async stream_usage() {
		const stream = await client().chat.completions.create({
			model, messages: hello, stream: true,
			stream_options: { include_usage: true },
		});
		let text = '';
		const chunks = [];
		for await (const chunk of stream) {
			chunks.push(chunk);
			if (chunk.choices.length > 0)
				text += chunk.choices[0].delta.content ?? '';
		}
		return { text, chunks };
	},

	// The SDK's stream helper, which assembles the completion from the
	// chunks and checks that they belong together.
	async stream_helper() {
		const runner = client().chat.completions.stream({ model, messages: hello });
		let text = '';
		runner.on('content', (delta) => { text += delta; });
		const c = await runner.finalChatCompletion();
		return {
			text, content: c.choices[0].message.content,
			finish_reason: c.choices[0].finish_reason,
		};
	},

	// A tool call and its result sent back, as in the function-calling guide.
	async tools() {
		const messages = [{ role: 'user', content: 'What is the weather in Oslo?' }];
		const first = await client().chat.completions.create({
			model, messages, tools: [WEATHER_TOOL],
		});
		const msg = first.choices[0].message;
		const call = msg.tool_calls[0];
		const args = JSON.parse(call.function.arguments);
		messages.push(msg);
		messages.push({
			role: 'tool', tool_call_id: call.id,
			content: JSON.stringify({ city: args.city, forecast: 'light rain' }),
		});
		const second = await client().chat.completions.create({
			model, messages, tools: [WEATHER_TOOL],
		});
		return {
			first_finish_reason: first.choices[0].finish_reason,
			call: { id: call.id, type: call.type, name: call.function.name, args },
			answer: second.choices[0].message.content,
			second_finish_reason: second.choices[0].finish_reason,
		};
	},

	// The SDK's own tool loop, streamed: it calls the function with the
	// arguments the stream assembled, sends the result back, and reads on.
	async run_tools() {
		const runner = client().chat.completions.runTools({
			model,
			messages: [{ role: 'user', content: 'What is the weather in Oslo?' }],
			stream: true,
			tools: [{
				type: 'function',
				function: {
					...WEATHER_TOOL.function,
					function: (args) => ({ city: args.city, forecast: 'light rain' }),
					parse: JSON.parse,
				},
			}],
		});
		const content = await runner.finalContent();
		return {
			content,
			calls: runner.messages.filter((m) => m.role === 'assistant' && m.tool_calls?.length)
				.map((m) => m.tool_calls.map((tc) => ({ name: tc.function.name, arguments: JSON.parse(tc.function.arguments) }))),
		};
	},

	async n() {
		const c = await client().chat.completions.create({ model, messages: hello, n: 3 });
		return {
			indexes: c.choices.map((ch) => ch.index),
			contents: c.choices.map((ch) => ch.message.content),
		};
	},

	async parse() {
		const c = await client().chat.completions.parse({
			model,
			messages: [{ role: 'user', content: 'Report the weather in Oslo.' }],
			response_format: WEATHER_SCHEMA,
		});
		return { parsed: c.choices[0].message.parsed };
	},

	async models() {
		const listed = [];
		for await (const m of client().models.list())
			listed.push(m);
		const one = await client().models.retrieve(model);
		return { listed, retrieved: one };
	},

	// The SDK asks for base64 unless told otherwise, and decodes it.
	async embeddings() {
		const e = await client().embeddings.create({
			model, input: ['hello', 'world'],
		});
		const f = await client().embeddings.create({
			model, input: 'hello', encoding_format: 'float',
		});
		return {
			object: e.object, model: e.model, usage: e.usage,
			vectors: e.data.map((d) => ({ index: d.index, embedding: Array.from(d.embedding) })),
			float: f.data.map((d) => d.embedding),
		};
	},

	// A provider key sent along on every call, as the client's default
	// headers (X-OpenRouter-Key, say).
	async inline_key() {
		const c = await client({ headers: plan.headers }).chat.completions.create({
			model, messages: hello,
		});
		return { content: c.choices[0].message.content, keygate: c.keygate };
	},

	// The error classes, one call each.
	async unauthorized() {
		return await client({ key: plan.bad_key }).chat.completions.create({ model, messages: hello });
	},
	async forbidden() {
		return await client({ key: plan.models_only_key }).chat.completions.create({ model, messages: hello });
	},
	// An estimate (max_tokens at the model's price) above the balance.
	async no_credits() {
		return await client({ key: plan.poor_key }).chat.completions.create({
			model, messages: hello, max_tokens: 100000,
		});
	},
	async unprocessable() {
		return await client().chat.completions.create({ model });
	},
	async forbidden_field() {
		return await client().chat.completions.create({
			model, messages: hello, api_base: 'http://127.0.0.1:9/',
		});
	},
	// keygate's own limit (one call a window): calls back to back until
	// one is refused; the SDK's retry after Retry-After gets it through.
	// (Two calls may fall into two windows, hence a few tries.)
	async rate_limited() {
		const c = client({ key: plan.limited_key, maxRetries: 4 });
		statuses.length = 0;
		let last;
		for (let i = 0; i < 4 && !statuses.includes(429); i++)
			last = await c.chat.completions.create({ model, messages: hello });
		return { statuses: [...statuses], content: last.choices[0].message.content };
	},
	async rate_limited_no_retry() {
		const c = client({ key: plan.limited_key, maxRetries: 0 });
		for (let i = 0; i < 4; i++)
			await c.chat.completions.create({ model, messages: hello });
		return { statuses: [...statuses] };
	},
	// The provider's 429 (armed in the mock before this run), retried.
	async upstream_429() {
		statuses.length = 0;
		const c = await client().chat.completions.create({
			model, messages: [{ role: 'user', content: 'Fail with 429 once.' }],
		});
		return { statuses: [...statuses], content: c.choices[0].message.content };
	},
	// The provider's own 400, passed through.
	async upstream_400() {
		return await client().chat.completions.create({
			model, messages: [{ role: 'user', content: 'Fail with 400.' }],
		});
	},
};

await runSteps(steps, plan.steps, describe);
