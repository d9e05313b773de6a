// A stand-in for OpenAI's API on loopback, for tests/bench/gateway:
//
//   POST .../chat/completions   a fixed, non-streamed chat completion with
//                               usage, whatever the request says
//   GET  /requests              {"requests": N}: chat completions answered
//                               so far, to check that a gateway really
//                               called this server
//   GET  anything else          an empty model list (what a key check asks)
//
// Usage: node openai-mock.js PORT [LATENCY_MS [CHUNKS STREAM_MS]].  One
// process, keep-alive: it answers far faster than any gateway in front of
// it, so the gateway is what a benchmark measures.  With LATENCY_MS, a
// completion is answered that many milliseconds after it arrived, as a
// real provider does (tests/bench/concurrency); a request with
// "stream": true is answered with CHUNKS (default 20) chunks spread over
// STREAM_MS (default 2000), the finish chunk, a usage chunk and [DONE].
'use strict';

const http = require('http');

const port = Number(process.argv[2]);
const latency = Number(process.argv[3] || 0);
const chunks = Number(process.argv[4] || 20);
const streamMs = Number(process.argv[5] || 2000);
if (!Number.isInteger(port) || port <= 0) {
	console.error('usage: node openai-mock.js PORT');
	process.exit(2);
}

const completion = JSON.stringify({
	id: 'chatcmpl-bench',
	object: 'chat.completion',
	created: 1767225600,
	model: 'gpt-4o-mini',
	choices: [{
		index: 0,
		message: { role: 'assistant', content: 'ok' },
		finish_reason: 'stop',
	}],
	usage: { prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 },
});
const models = JSON.stringify({ object: 'list', data: [] });
let served = 0;

function send(res, status, body) {
	res.writeHead(status, {
		'Content-Type': 'application/json',
		'Content-Length': Buffer.byteLength(body),
	});
	res.end(body);
}

function chunk(delta, finish, usage) {
	const c = { id: 'chatcmpl-bench', object: 'chat.completion.chunk',
		created: 1767225600, model: 'gpt-4o-mini',
		choices: usage ? [] : [{ index: 0, delta, finish_reason: finish }] };
	if (usage)
		c.usage = usage;
	return 'data: ' + JSON.stringify(c) + '\n\n';
}

// A stream of `chunks` words over streamMs, then its end.
function stream(res) {
	let i = 0;
	res.writeHead(200, { 'Content-Type': 'text/event-stream' });
	res.write(chunk({ role: 'assistant', content: '' }, null));
	const timer = setInterval(() => {
		res.write(chunk({ content: 'word' + i + ' ' }, null));
		if (++i < chunks)
			return;
		clearInterval(timer);
		res.write(chunk({}, 'stop'));
		res.write(chunk(null, null, { prompt_tokens: 9,
			completion_tokens: chunks, total_tokens: 9 + chunks }));
		res.end('data: [DONE]\n\n');
	}, streamMs / chunks);
	res.on('close', () => clearInterval(timer));
}

const server = http.createServer((req, res) => {
	// Read the body, then answer.
	let body = '';
	req.on('data', (d) => { if (body.length < 65536) body += d; });
	req.on('end', () => {
		if (req.method === 'POST' && req.url.endsWith('/chat/completions')) {
			served++;
			if (/"stream"\s*:\s*true/.test(body))
				stream(res);
			else if (latency > 0)
				setTimeout(() => send(res, 200, completion), latency);
			else
				send(res, 200, completion);
		} else if (req.method === 'GET' && req.url === '/requests') {
			send(res, 200, JSON.stringify({ requests: served }));
		} else if (req.method === 'GET') {
			send(res, 200, models);
		} else {
			send(res, 404, JSON.stringify({ error: {
				message: 'no route for ' + req.method + ' ' + req.url,
				type: 'invalid_request_error', code: 'not_found' } }));
		}
	});
});
// Longer than any pause between two benchmark runs, so that clients that
// keep their connections open are not cut off.
server.keepAliveTimeout = 120000;
server.headersTimeout = 121000;
// Thousands of connections may arrive at once: an accept queue as long as
// the kernel allows (node's default, 511, resets the connections beyond
// it once the queue overflows, and the gateway in front fails those calls).
server.listen({ port, host: '127.0.0.1', backlog: 65535 });
