// A stand-in for OpenAI's API on loopback, for tests/bench/gateway:
//
//   POST .../chat/completions   a fixed, non-streamed chat completion with
//                               usage, whatever the request says
//   GET  /requests              {"requests": N}: chat completions answered
//                               so far, to check that a gateway really
//                               called this server
//   GET  anything else          an empty model list (what a key check asks)
//
// Usage: node openai-mock.js PORT.  One process, keep-alive, no parsing of
// the request body: it answers far faster than any gateway in front of it,
// so the gateway is what a benchmark measures.
'use strict';

const http = require('http');

const port = Number(process.argv[2]);
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

const server = http.createServer((req, res) => {
	// Drain the body, then answer.
	req.on('data', () => {});
	req.on('end', () => {
		if (req.method === 'POST' && req.url.endsWith('/chat/completions')) {
			served++;
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
server.listen(port, '127.0.0.1');
