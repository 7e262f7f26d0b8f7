// Drives podid's association API with the real @aws-sdk/client-eks.
// Run by internal/server's TestNPMClientEKS with PODID_ENDPOINT, PODID_CLUSTER
// and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY set; exits non-zero on the
// first expectation that does not hold.
import assert from "node:assert/strict";
import {
  EKSClient,
  CreatePodIdentityAssociationCommand,
  DescribePodIdentityAssociationCommand,
  ListPodIdentityAssociationsCommand,
  UpdatePodIdentityAssociationCommand,
  DeletePodIdentityAssociationCommand,
  paginateListPodIdentityAssociations,
  ResourceInUseException,
  ResourceNotFoundException,
  InvalidParameterException,
} from "@aws-sdk/client-eks";

const endpoint = process.env.PODID_ENDPOINT;
const clusterName = process.env.PODID_CLUSTER;
assert.ok(endpoint && clusterName, "PODID_ENDPOINT and PODID_CLUSTER must be set");

const eks = new EKSClient({ endpoint, region: "us-east-1", maxAttempts: 1 });
const role = "arn:aws:iam::111122223333:role/npm-app";

async function rejects(promise, type) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof type, `expected ${type.name}, got ${err.name}: ${err.message}`);
    assert.equal(err.name, type.name);
    return err;
  }
  assert.fail(`expected ${type.name}, the call succeeded`);
}

const created = await eks.send(new CreatePodIdentityAssociationCommand({
  clusterName, namespace: "npm", serviceAccount: "app", roleArn: role,
  tags: { team: "js" }, clientRequestToken: "npm-token-1",
}));
const a = created.association;
assert.match(a.associationId, /^a-[a-z0-9]{17}$/);
assert.equal(a.associationArn, `arn:aws:eks:us-east-1:111122223333:podidentityassociation/${clusterName}/${a.associationId}`);
assert.ok(a.createdAt instanceof Date && !isNaN(a.createdAt), "createdAt is a Date");
assert.deepEqual(a.tags, { team: "js" });

// Idempotent retry with the same token returns the same association.
const again = await eks.send(new CreatePodIdentityAssociationCommand({
  clusterName, namespace: "npm", serviceAccount: "app", roleArn: role,
  tags: { team: "js" }, clientRequestToken: "npm-token-1",
}));
assert.equal(again.association.associationId, a.associationId);

await rejects(eks.send(new CreatePodIdentityAssociationCommand({
  clusterName, namespace: "npm", serviceAccount: "app", roleArn: role,
})), ResourceInUseException);
const bad = await rejects(eks.send(new CreatePodIdentityAssociationCommand({
  clusterName, namespace: "npm", serviceAccount: "other", roleArn: "not-an-arn",
})), InvalidParameterException);
assert.match(bad.message, /roleArn/);

const described = await eks.send(new DescribePodIdentityAssociationCommand({ clusterName, associationId: a.associationId }));
assert.equal(described.association.roleArn, role);

for (let i = 0; i < 7; i++) {
  await eks.send(new CreatePodIdentityAssociationCommand({
    clusterName, namespace: "npm-pages", serviceAccount: `sa-${i}`, roleArn: role,
  }));
}
const seen = [];
for await (const page of paginateListPodIdentityAssociations({ client: eks, pageSize: 3 }, { clusterName, namespace: "npm-pages" })) {
  assert.ok(page.associations.length <= 3);
  seen.push(...page.associations.map((s) => s.serviceAccount));
}
assert.deepEqual(seen.sort(), [0, 1, 2, 3, 4, 5, 6].map((i) => `sa-${i}`));

const filtered = await eks.send(new ListPodIdentityAssociationsCommand({ clusterName, namespace: "npm", serviceAccount: "app" }));
assert.equal(filtered.associations.length, 1);
assert.equal(filtered.associations[0].associationId, a.associationId);
assert.equal(filtered.associations[0].roleArn, undefined, "summaries carry no roleArn");

const updated = await eks.send(new UpdatePodIdentityAssociationCommand({
  clusterName, associationId: a.associationId, roleArn: "arn:aws:iam::111122223333:role/npm-app-v2",
}));
assert.equal(updated.association.roleArn, "arn:aws:iam::111122223333:role/npm-app-v2");

const deleted = await eks.send(new DeletePodIdentityAssociationCommand({ clusterName, associationId: a.associationId }));
assert.equal(deleted.association.associationId, a.associationId);
await rejects(eks.send(new DescribePodIdentityAssociationCommand({ clusterName, associationId: a.associationId })), ResourceNotFoundException);
await rejects(eks.send(new ListPodIdentityAssociationsCommand({ clusterName: "no-such-cluster" })), ResourceNotFoundException);

console.log(JSON.stringify({ ok: true, associationId: a.associationId, paged: seen.length }));
