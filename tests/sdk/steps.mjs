// What openai_client.mjs and anthropic_client.mjs share: run the steps the
// plan names, in order, and print one JSON object with each step's result,
// or {"error": describe(err)} for a step whose call threw.
export async function runSteps(steps, names, describe) {
	const out = {};
	for (const name of names) {
		try {
			out[name] = await steps[name]();
		} catch (err) {
			out[name] = { error: describe(err) };
		}
	}
	process.stdout.write(JSON.stringify(out) + '\n');
}
