// Validates Kubernetes documents against Istio's CRD schemas (@kubernetes-models/istio).
// Input: a JSON array of documents on stdin. Output: a JSON array of
// {kind, name, ok, error} on stdout, one per document. Exit 0 when every document is valid.
import { readFileSync } from "node:fs";

const docs = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const doc of docs) {
  const kind = doc?.kind;
  const name = doc?.metadata?.name;
  const [group, version] = String(doc?.apiVersion ?? "").split("/");
  let error = null;
  try {
    if (!group || !version || !kind || !group.endsWith(".istio.io")) {
      throw new Error(`not an Istio resource: apiVersion ${doc?.apiVersion}, kind ${kind}`);
    }
    const mod = await import(`@kubernetes-models/istio/${group}/${version}/${kind}`);
    new mod[kind](doc).validate();
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
  }
  results.push({ kind, name, ok: error === null, error });
}
process.stdout.write(JSON.stringify(results) + "\n");
process.exit(results.every((r) => r.ok) ? 0 : 1);
