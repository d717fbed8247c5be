// Consistency checks of one rendered overlay that schemas cannot express: selectors match pods,
// the expert StatefulSet's replicas equal the placement's NUM_SHARDS, the attention reaches the
// shards through their headless Service, probes are native gRPC, every container has requests
// and limits, graceful termination outlasts preStop + drain, metrics ports line up with the
// ServiceMonitor, referenced ConfigMaps/Secrets exist, GPUs only where the overlay wants them.
// Usage: node check_rendered.mjs RENDERED.yaml --gpu=0|1 [--external-secret=NAME]
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const args = Object.fromEntries(process.argv.slice(3).map((a) => a.replace(/^--/, "").split("=")));
const objects = parseAllDocuments(readFileSync(process.argv[2], "utf8")).map((d) => d.toJS()).filter(Boolean);
const wantGpu = args.gpu === "1";
const externalSecrets = new Set((args["external-secret"] ?? "").split(",").filter(Boolean));
const problems = [];
const problem = (message) => problems.push(message);
const byKind = (kind) => objects.filter((o) => o.kind === kind);
const named = (kind, name) => objects.find((o) => o.kind === kind && o.metadata.name === name);
const matches = (selector, labels) => Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
const workloads = [...byKind("Deployment"), ...byKind("StatefulSet")];
const configMaps = byKind("ConfigMap");
const configValue = (nameStart, key) => {
  const found = configMaps.filter((c) => c.metadata.name.startsWith(nameStart) && c.data?.[key] !== undefined);
  return found.length === 1 ? found[0].data[key] : undefined;
};

// Workload basics.
for (const w of workloads) {
  const pod = w.spec.template;
  const id = `${w.kind}/${w.metadata.name}`;
  if (!matches(w.spec.selector.matchLabels, pod.metadata.labels)) problem(`${id}: selector does not match its pod labels`);
  if (pod.spec.securityContext?.runAsNonRoot !== true) problem(`${id}: pods must run as non-root`);
  const grace = pod.spec.terminationGracePeriodSeconds;
  for (const c of [...(pod.spec.initContainers ?? []), ...pod.spec.containers]) {
    const cid = `${id} container ${c.name}`;
    for (const side of ["requests", "limits"]) {
      for (const resource of ["cpu", "memory"]) {
        if (!c.resources?.[side]?.[resource]) problem(`${cid}: no ${side}.${resource}`);
      }
    }
    const gpuRequest = c.resources?.limits?.["nvidia.com/gpu"];
    if (pod.spec.containers.includes(c) && ["expert", "attention"].includes(c.name)) {
      if (wantGpu && String(gpuRequest) !== "1") problem(`${cid}: gpu overlay needs limits nvidia.com/gpu: 1, got ${gpuRequest}`);
    }
    if (!wantGpu && gpuRequest !== undefined) problem(`${cid}: requests a GPU in a CPU overlay`);
    if (c.securityContext?.readOnlyRootFilesystem !== true) problem(`${cid}: root filesystem must be read-only`);
  }
  for (const c of pod.spec.containers) {
    const cid = `${id} container ${c.name}`;
    const ports = Object.fromEntries((c.ports ?? []).map((p) => [p.name, p.containerPort]));
    if (!ports.grpc || !ports.metrics) problem(`${cid}: needs ports named grpc and metrics`);
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      if (c[probe]?.grpc?.port !== ports.grpc) problem(`${cid}: ${probe} must be a native gRPC probe on the grpc port`);
    }
    if (!c.readinessProbe?.grpc?.service?.startsWith("expertmesh.v1.")) problem(`${cid}: readiness must check the service's own health name`);
    const text = [...(c.command ?? []), ...(c.args ?? [])].join(" ");
    const flag = (name) => text.match(new RegExp(`--${name}=("?)([^"\\s]+)\\1`))?.[2];
    if (flag("metrics-listen") !== `0.0.0.0:${ports.metrics}`) problem(`${cid}: --metrics-listen must serve the metrics port ${ports.metrics}`);
    if (flag("listen") !== `0.0.0.0:${ports.grpc}`) problem(`${cid}: --listen must serve the grpc port ${ports.grpc}`);
    const drain = Number(flag("drain-seconds") ?? flag("drain-grace-seconds"));
    const preStop = Number(c.lifecycle?.preStop?.exec?.command?.[1] ?? 0);
    if (!(drain > 0)) problem(`${cid}: no drain flag`);
    if (!(grace >= preStop + drain + 5)) problem(`${id}: terminationGracePeriodSeconds ${grace} < preStop ${preStop} + drain ${drain} + 5`);
    // Every ConfigMap / Secret the container uses exists in the output (names carry hashes).
    for (const e of c.env ?? []) {
      const ref = e.valueFrom?.configMapKeyRef;
      if (ref && !configMaps.some((m) => m.metadata.name === ref.name && m.data?.[ref.key] !== undefined)) {
        problem(`${cid}: env ${e.name} refers to missing ConfigMap key ${ref.name}/${ref.key}`);
      }
    }
  }
  for (const v of pod.spec.volumes ?? []) {
    if (v.configMap && !named("ConfigMap", v.configMap.name)) problem(`${id}: volume ${v.name}: no ConfigMap ${v.configMap.name}`);
    if (v.secret && !named("Secret", v.secret.secretName) && !externalSecrets.has(v.secret.secretName)) {
      problem(`${id}: volume ${v.name}: no Secret ${v.secret.secretName}`);
    }
  }
}

// Services select pods, and every workload is behind a Service with a metrics port.
for (const s of byKind("Service")) {
  if (!workloads.some((w) => matches(s.spec.selector, w.spec.template.metadata.labels))) problem(`Service/${s.metadata.name}: selects no pods`);
}
for (const w of workloads) {
  const services = byKind("Service").filter((s) => matches(s.spec.selector, w.spec.template.metadata.labels));
  if (!services.some((s) => s.spec.ports.some((p) => p.name === "metrics"))) problem(`${w.kind}/${w.metadata.name}: no Service exposes its metrics port`);
}
for (const p of byKind("PodDisruptionBudget")) {
  const covered = workloads.filter((w) => matches(p.spec.selector.matchLabels, w.spec.template.metadata.labels));
  if (covered.length !== 1) problem(`PodDisruptionBudget/${p.metadata.name}: covers ${covered.length} workloads, want 1`);
}
for (const w of workloads) {
  if (!byKind("PodDisruptionBudget").some((p) => matches(p.spec.selector.matchLabels, w.spec.template.metadata.labels))) {
    problem(`${w.kind}/${w.metadata.name}: no PodDisruptionBudget`);
  }
}
const monitors = byKind("ServiceMonitor");
if (monitors.length !== 1) problem(`want one ServiceMonitor, got ${monitors.length}`);
for (const m of monitors) {
  const selected = byKind("Service").filter((s) => matches(m.spec.selector.matchLabels, s.metadata.labels));
  for (const name of ["router", "attention", "expert"]) {
    if (!selected.some((s) => s.metadata.labels["app.kubernetes.io/name"] === name)) problem(`ServiceMonitor/${m.metadata.name}: does not select the ${name} Service`);
  }
  if (!m.spec.endpoints.every((e) => e.port === "metrics")) problem(`ServiceMonitor/${m.metadata.name}: endpoints must use the metrics port`);
}

// Expert shards: StatefulSet + headless Service, ordinal = shard index, replicas = NUM_SHARDS.
const experts = byKind("StatefulSet").find((s) => s.metadata.name === "expertmesh-expert");
if (!experts) {
  problem("no expertmesh-expert StatefulSet");
} else {
  const headless = named("Service", experts.spec.serviceName);
  if (!headless || headless.spec.clusterIP !== "None") problem(`StatefulSet serviceName ${experts.spec.serviceName} is not a headless Service`);
  const shards = Number(configValue("expertmesh-placement", "NUM_SHARDS"));
  if (experts.spec.replicas !== shards) problem(`expert replicas ${experts.spec.replicas} != placement NUM_SHARDS ${shards}`);
  const script = experts.spec.template.spec.containers[0].args.join("\n");
  if (!/shard_index="\$\{POD_NAME##\*-\}"/.test(script) || !/--shard-index="\$shard_index"/.test(script)) problem("expert shard index must come from the pod ordinal");
  const grpcPort = headless?.spec.ports.find((p) => p.name === "grpc")?.port;
  const shardsSpec = configValue("expertmesh-placement", "EXPERT_SHARDS");
  if (shardsSpec !== `dns:${experts.spec.serviceName}:${grpcPort}`) problem(`EXPERT_SHARDS ${shardsSpec} must be dns:${experts.spec.serviceName}:${grpcPort}`);
}
const attentionService = byKind("Service").find((s) => s.metadata.labels["app.kubernetes.io/name"] === "attention");
const replicasSpec = configValue("expertmesh-placement", "ATTENTION_REPLICAS");
if (!attentionService || replicasSpec !== `dns:${attentionService.metadata.name}:${attentionService.spec.ports.find((p) => p.name === "grpc").port}`) {
  problem(`ATTENTION_REPLICAS ${replicasSpec} must name the attention headless Service and its grpc port`);
}
if (attentionService && attentionService.spec.clusterIP !== "None") problem("the attention Service must be headless (the router balances over replicas)");
for (const file of Object.keys(configMaps.find((c) => c.metadata.name.startsWith("expertmesh-recipes"))?.data ?? {})) {
  try {
    const recipe = JSON.parse(configMaps.find((c) => c.metadata.name.startsWith("expertmesh-recipes")).data[file]);
    for (const key of ["name", "parents", "lambdas", "base"]) if (!(key in recipe)) problem(`recipe ${file}: no "${key}"`);
  } catch (error) {
    problem(`recipe ${file}: not JSON: ${error.message}`);
  }
}

for (const p of problems) console.log(`FAIL ${p}`);
console.log(`${objects.length} objects checked, ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
