// keygate's POST /v1/messages driven by the official Anthropic SDK, pointed
// at it by base URL only (the SDK sends the key as x-api-key, with
// anthropic-version).  tests/e2e/test_sdk.py runs this once per model:
//
//   node anthropic_client.mjs '{"base_url": ..., "key": ..., "model": ...,
//                               "steps": ["create", "stream", ...]}'
//
// and reads one JSON object on stdout, as openai_client.mjs prints it.
import Anthropic from '@anthropic-ai/sdk';
import { runSteps } from './steps.mjs';

const plan = JSON.parse(process.argv[2]);

const client = new Anthropic({
	baseURL: plan.base_url,
	apiKey: plan.key,
	maxRetries: 2,
	timeout: 60_000,
});

function describe(err) {
	const out = {
		class: err?.constructor?.name ?? typeof err,
		is_api_error: err instanceof Anthropic.APIError,
		message: String(err?.message ?? err),
	};
	if (err instanceof Anthropic.APIError) {
		out.status = err.status;
		out.error = err.error;
	}
	return out;
}

const params = {
	model: plan.model,
	max_tokens: 256,
	messages: [{ role: 'user', content: 'Say hello.' }],
};

const steps = {
	async create() {
		const { data: m, response } = await client.messages.create(params).withResponse();
		return {
			headers: {
				provider: response.headers.get('x-keygate-provider'),
				key_source: response.headers.get('x-keygate-key-source'),
			},
			id: m.id, type: m.type, role: m.role, model: m.model,
			content: m.content, stop_reason: m.stop_reason, usage: m.usage,
			keygate: m.keygate ?? null,
		};
	},

	// The raw events, as a loop over them sees them.
	async stream() {
		const stream = await client.messages.create({ ...params, stream: true });
		const events = [];
		let text = '';
		for await (const event of stream) {
			events.push(event);
			if (event.type === 'content_block_delta' && event.delta.type === 'text_delta')
				text += event.delta.text;
		}
		return { text, types: events.map((e) => e.type), events };
	},

	// The SDK's stream helper, which checks the order of the events.
	async stream_helper() {
		const stream = client.messages.stream(params);
		let text = '';
		stream.on('text', (t) => { text += t; });
		const m = await stream.finalMessage();
		return { text, content: m.content, stop_reason: m.stop_reason, usage: m.usage };
	},

	async unauthorized() {
		const bad = new Anthropic({ baseURL: plan.base_url, apiKey: plan.bad_key, maxRetries: 0 });
		return await bad.messages.create(params);
	},
};

await runSteps(steps, plan.steps, describe);
