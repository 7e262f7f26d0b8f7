// Fetches credentials the way a pod does: the AWS SDK for JavaScript's
// container provider reads AWS_CONTAINER_CREDENTIALS_FULL_URI and
// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE and calls podid agent.
// Run by the agent's Go tests. With ROTATE_TOKEN_FILE set it fetches once,
// waits for a line on stdin (the test rotates the token file meanwhile) and
// fetches again. Prints one JSON line per fetch; exits non-zero on failure.
import { fromNodeProviderChain } from "@aws-sdk/credential-providers";
import { createInterface } from "node:readline";

async function fetchOnce() {
  // A fresh chain each time: the chain memoizes what it got.
  const creds = await fromNodeProviderChain()();
  return {
    accessKeyId: creds.accessKeyId,
    hasSecret: Boolean(creds.secretAccessKey),
    hasSessionToken: Boolean(creds.sessionToken),
    accountId: creds.accountId ?? null,
    expiration: creds.expiration?.toISOString() ?? null,
  };
}

try {
  console.log(JSON.stringify(await fetchOnce()));
  if (process.env.ROTATE_TOKEN_FILE) {
    const rl = createInterface({ input: process.stdin });
    await new Promise((resolve) => rl.once("line", resolve));
    rl.close();
    console.log(JSON.stringify(await fetchOnce()));
  }
} catch (err) {
  console.error(`${err.name}: ${err.message}`);
  process.exit(1);
}
