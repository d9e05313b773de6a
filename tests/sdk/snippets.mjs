// The JavaScript client code of the reference documents, run against
// keygate by tests/e2e/test_sdk.py:  node snippets.mjs NAME
//
// Each function below is one snippet as the document shows it, changed
// only in
//   - the base URL: ${KEYGATE_URL} (keygate behind lighttpd) for the
//     product's, ${OPENAI_BASE_URL} (the mock provider) for OpenAI's;
//   - brand names: the product's and its pool's names become keygate's
//     (KEYGATE_API_KEY, data.keygate.key_source, pool_available,
//     pool_markup_applied, keygateKey);
//   - keys: the environment gives them (KEYGATE_API_KEY and the provider
//     keys the mock accepts);
//   - where the snippet names a model of the product's own
//     ("...-small-gpt-4o"), the OpenAI model it wraps, gpt-4o-mini, and
//     where it elides the messages ("[...]"), one message;
//   - TypeScript's type annotations, dropped so that Node runs it.
// What each prints is what the test reads.
import OpenAI from 'openai';

const KEYGATE_URL = process.env.KEYGATE_URL;
const OPENAI_BASE_URL = process.env.OPENAI_BASE_URL;
const userKeygateKey = process.env.KEYGATE_API_KEY;
const keygateKey = process.env.KEYGATE_API_KEY;
const userOpenAiKey = process.env.OPENAI_KEY;
const userAnthropicKey = process.env.ANTHROPIC_KEY;
const openaiKey = process.env.OPENAI_KEY;
const anthropicKey = process.env.ANTHROPIC_KEY;
const googleKey = process.env.GOOGLE_KEY;
const openrouterKey = process.env.OPENROUTER_KEY;

const snippets = {
	// api-keys-console: "SDK Configuration", JavaScript/TypeScript, and
	// its curl request's body sent through the client.
	async console_sdk() {
		const client = new OpenAI({
			apiKey: process.env.KEYGATE_API_KEY,
			baseURL: `${KEYGATE_URL}/v1`,
		});
		const c = await client.chat.completions.create({
			model: 'vllm-primary',
			messages: [{ role: 'user', content: 'Hello!' }],
		});
		console.log(c.choices[0].message.content);
	},

	// byok-key-resolution: "In Your Code", TypeScript / Node.js.
	async byok_sdk() {
		const client = new OpenAI({
			baseURL: `${KEYGATE_URL}/v1`,
			apiKey: process.env.KEYGATE_API_KEY
		});
		const c = await client.chat.completions.create({
			model: 'gpt-4o-mini',
			messages: [{ role: 'user', content: 'Hello!' }],
		});
		console.log(c.choices[0].message.content);
	},

	// llm-key-vault: "Store LLM Keys", Example.
	async store_keys() {
		const response = await fetch(`${KEYGATE_URL}/v1/account/llm-keys`, {
			method: 'POST',
			headers: {
				'Authorization': `Bearer ${process.env.KEYGATE_API_KEY}`,
				'Content-Type': 'application/json'
			},
			body: JSON.stringify({
				openai_key: openaiKey,         // optional
				anthropic_key: anthropicKey,   // optional
				google_key: googleKey,         // optional
				openrouter_key: openrouterKey, // optional
			})
		});

		const result = await response.json();
		console.log(result.message); // "LLM API keys stored and validated successfully"
	},

	// llm-key-vault: "Get Key Status", Example.
	async key_status() {
		const response = await fetch(`${KEYGATE_URL}/v1/account/llm-keys`, {
			headers: {
				'Authorization': `Bearer ${process.env.KEYGATE_API_KEY}`
			}
		});

		const status = await response.json();
		console.log('OpenAI key configured:', status.has_openai_key);
		console.log('Anthropic key configured:', status.has_anthropic_key);
		console.log('OpenAI last validated:', status.openai_last_validated);
	},

	// llm-key-vault: "Delete LLM Keys", Example, its two requests.
	async delete_one() {
		// Delete specific provider (query param)
		const response = await fetch(`${KEYGATE_URL}/v1/account/llm-keys?provider=openai`, {
			method: 'DELETE',
			headers: {
				'Authorization': `Bearer ${process.env.KEYGATE_API_KEY}`
			}
		});

		const result = await response.json();
		console.log(result.success); // true
	},

	async delete_all() {
		// Delete all keys
		const response = await fetch(`${KEYGATE_URL}/v1/account/llm-keys`, {
			method: 'DELETE',
			headers: {
				'Authorization': `Bearer ${process.env.KEYGATE_API_KEY}`
			}
		});
		const result = await response.json();
		console.log(result.success); // true
	},

	// llm-key-vault: "Zero-Config Flow (the pool)".
	async zero_config() {
		// Works out of the box — the pool handles the LLM call
		const response = await fetch(`${KEYGATE_URL}/v1/chat/completions`, {
			method: 'POST',
			headers: {
				'Authorization': `Bearer ${userKeygateKey}`,
				'Content-Type': 'application/json'
			},
			body: JSON.stringify({
				model: 'gpt-4o-mini',
				messages: [
					{ role: 'system', content: 'Current state: ...' },
					{ role: 'user', content: 'What happens if I click submit?' }
				]
			})
		});

		const data = await response.json();
		console.log(data.keygate.key_source);          // "pool"
		console.log(data.keygate.pool_markup_applied); // 0.25
	},

	// llm-key-vault: "BYOK Setup Flow (Remove Markup)".
	async byok_flow() {
		// 1. Check vault connection (optional — for resilience)
		const health = await fetch(`${KEYGATE_URL}/health`).then(r => r.json());
		if (health.vault !== 'connected') {
			console.warn('Vault unavailable - keys will use the pool fallback');
		}

		// 2. Store user's LLM keys
		await fetch(`${KEYGATE_URL}/v1/account/llm-keys`, {
			method: 'POST',
			headers: {
				'Authorization': `Bearer ${userKeygateKey}`,
				'Content-Type': 'application/json'
			},
			body: JSON.stringify({
				openai_key: userOpenAiKey,       // optional
				anthropic_key: userAnthropicKey, // optional
			})
		});

		// 3. Verify storage
		const status = await fetch(`${KEYGATE_URL}/v1/account/llm-keys`, {
			headers: { 'Authorization': `Bearer ${userKeygateKey}` }
		}).then(r => r.json());

		console.log('Pool available:', status.pool_available); // true
		console.log('Has OpenAI key:', status.has_openai_key);
		console.log('Has Anthropic key:', status.has_anthropic_key);

		// 4. Make predictions — stored key used automatically, no markup
		const response = await fetch(`${KEYGATE_URL}/v1/chat/completions`, {
			method: 'POST',
			headers: {
				'Authorization': `Bearer ${userKeygateKey}`,
				'Content-Type': 'application/json'
			},
			body: JSON.stringify({
				model: 'gpt-4o-mini',
				messages: [
					{ role: 'system', content: 'Current state: ...' },
					{ role: 'user', content: 'What happens if I click submit?' }
				]
			})
		});

		const data = await response.json();
		console.log(data.keygate.key_source);          // "user"
		console.log(data.keygate.pool_markup_applied); // null
	},

	// llm-key-vault: "Key Rotation".
	async key_rotation() {
		async function rotateOpenAiKey(keygateKey, newOpenAiKey) {
			// 1. Store new key
			await fetch(`${KEYGATE_URL}/v1/account/llm-keys`, {
				method: 'POST',
				headers: {
					'Authorization': `Bearer ${keygateKey}`,
					'Content-Type': 'application/json'
				},
				body: JSON.stringify({ openai_key: newOpenAiKey })
			});

			// 2. Verify
			const status = await fetch(`${KEYGATE_URL}/v1/account/llm-keys`, {
				headers: { 'Authorization': `Bearer ${keygateKey}` }
			}).then(r => r.json());

			if (status.has_openai_key) {
				console.log('OpenAI key rotated successfully');
			}
		}
		await rotateOpenAiKey(keygateKey, openaiKey);
	},

	// llm-key-vault: "User Onboarding UI", with the promptUser() it
	// leaves to the reader answering the two questions in turn.
	async onboarding() {
		const answers = [openaiKey, ''];
		const promptUser = async () => answers.shift();
		async function onboardUserLLMKeys(keygateKey) {
			// LLM keys are optional — the pool works out of the box.
			// Offer this as an upgrade path to remove the 25% markup.
			const openaiKey = await promptUser('Enter your OpenAI API key (optional — removes pool markup):');
			const anthropicKey = await promptUser('Enter your Anthropic API key (optional):');

			if (!openaiKey && !anthropicKey) {
				// Totally fine — the pool will be used automatically
				console.log('No keys provided. The pool will handle requests (25% markup applies).');
				return;
			}

			// Store provided keys
			const response = await fetch(`${KEYGATE_URL}/v1/account/llm-keys`, {
				method: 'POST',
				headers: {
					'Authorization': `Bearer ${keygateKey}`,
					'Content-Type': 'application/json'
				},
				body: JSON.stringify({
					...(openaiKey && { openai_key: openaiKey }),
					...(anthropicKey && { anthropic_key: anthropicKey })
				})
			});

			const result = await response.json();

			if (result.success) {
				console.log('Keys stored securely. Pool markup removed for stored providers.');
			} else {
				console.error('Failed to store keys');
			}
		}
		await onboardUserLLMKeys(keygateKey);
	},

	// llm-key-vault: "1. Validate Before Storage".
	async validate_and_store() {
		async function validateAndStoreKeys(
			keygateKey,
			openaiKey,
			anthropicKey
		) {
			// Validate OpenAI key
			if (openaiKey) {
				try {
					const testResponse = await fetch(`${OPENAI_BASE_URL}/models`, {
						headers: { 'Authorization': `Bearer ${openaiKey}` }
					});
					if (!testResponse.ok) {
						throw new Error('Invalid OpenAI key');
					}
				} catch (error) {
					console.error('OpenAI key validation failed:', error);
					return false;
				}
			}

			// Store if valid
			const response = await fetch(`${KEYGATE_URL}/v1/account/llm-keys`, {
				method: 'POST',
				headers: {
					'Authorization': `Bearer ${keygateKey}`,
					'Content-Type': 'application/json'
				},
				body: JSON.stringify({
					...(openaiKey && { openai_key: openaiKey }),
					...(anthropicKey && { anthropic_key: anthropicKey })
				})
			});

			return response.ok;
		}
		console.log(await validateAndStoreKeys(keygateKey, openaiKey, anthropicKey));
	},

	// llm-key-vault: "4. Implement Key Expiry Checks".
	async key_expiry() {
		async function checkKeyStatus(keygateKey) {
			const status = await fetch(`${KEYGATE_URL}/v1/account/llm-keys`, {
				headers: { 'Authorization': `Bearer ${keygateKey}` }
			}).then(r => r.json());

			if (status.openai_last_validated) {
				const lastValidated = new Date(status.openai_last_validated);
				const daysSince = (Date.now() - lastValidated.getTime()) / (1000 * 60 * 60 * 24);

				if (daysSince > 90) {
					console.warn('OpenAI key is >90 days old - consider rotation');
				}
			}
		}
		await checkKeyStatus(keygateKey);
	},

	// llm-key-vault: "Inline Headers Example".
	async inline_headers() {
		const response = await fetch(`${KEYGATE_URL}/v1/chat/completions`, {
			method: 'POST',
			headers: {
				'Authorization': `Bearer ${keygateKey}`,
				'X-OpenAI-Key': openaiKey,           // OpenAI — takes priority over vault + pool
				'X-Anthropic-Key': anthropicKey,     // Anthropic
				'X-Google-Key': googleKey,           // Google Gemini
				'X-OpenRouter-Key': openrouterKey,   // OpenRouter
				'Content-Type': 'application/json'
			},
			body: JSON.stringify({
				model: 'gpt-4o-mini',
				messages: [{ role: 'user', content: 'What happens if I click submit?' }]
			})
		});
		const data = await response.json();
		console.log(data.keygate.key_source);
		console.log(data.keygate.provider);
	},
};

await snippets[process.argv[2]]();
