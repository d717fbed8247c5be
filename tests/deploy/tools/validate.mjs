// Offline schema validation of rendered Kubernetes manifests: every document of the given YAML
// files (or stdin) must be a known apiVersion/kind of the Kubernetes API (kubernetes-models) or
// prometheus-operator (@kubernetes-models/prometheus-operator) and pass its JSON schema,
// unknown fields included. Prints one line per object; exits 1 if any object fails.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { unknownFields, resolveDeclarationFile } from "./strict_fields.mjs";

function modulePath(apiVersion) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") return `@kubernetes-models/prometheus-operator/${group}/${version}`;
  return group === "" ? `kubernetes-models/${version}` : `kubernetes-models/${group}/${version}`;
}

// Schema validation (types, required fields, enums, formats), then the unknown-field walk.
async function validateObject(object) {
  if (!object || typeof object !== "object") throw new Error("not an object");
  const { apiVersion, kind } = object;
  if (typeof apiVersion !== "string" || typeof kind !== "string") throw new Error("missing apiVersion or kind");
  let module;
  try {
    module = await import(modulePath(apiVersion));
  } catch (error) {
    throw new Error(`unknown apiVersion ${apiVersion}`);
  }
  const Model = module[kind];
  if (typeof Model !== "function") throw new Error(`unknown kind ${kind} in ${apiVersion}`);
  new Model(object).validate();
  const declarations = resolveDeclarationFile(`${modulePath(apiVersion)}/${kind}`, import.meta.url.replace("file://", ""));
  const problems = unknownFields(object, declarations, `I${kind}`);
  if (problems.length) throw new Error(problems.join(", "));
}

const inputs = process.argv.slice(2);
const texts = inputs.length ? inputs.map((file) => [file, readFileSync(file, "utf8")]) : [["<stdin>", readFileSync(0, "utf8")]];
let failures = 0;
let count = 0;
for (const [file, text] of texts) {
  for (const document of parseAllDocuments(text)) {
    if (document.errors.length) {
      console.log(`FAIL ${file}: YAML: ${document.errors[0].message}`);
      failures++;
      continue;
    }
    const object = document.toJS();
    if (object === null) continue;
    const name = `${object.kind ?? "?"}/${object.metadata?.name ?? "?"}`;
    count++;
    try {
      await validateObject(object);
      console.log(`ok   ${object.apiVersion} ${name}`);
    } catch (error) {
      failures++;
      console.log(`FAIL ${object.apiVersion} ${name}: ${error.message}`);
    }
  }
}
console.log(`${count} objects, ${failures} invalid`);
process.exit(failures || count === 0 ? 1 : 0);
