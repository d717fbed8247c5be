// Unknown-field check for Kubernetes objects. The JSON-schema validators of kubernetes-models
// accept properties they do not know (the API server would drop or reject them), so a typo such
// as "readinesProbe" would pass. This walks an object along the TypeScript declarations shipped
// with the models (.d.ts: interfaces, inline object types, Array<>, index signatures, unions,
// imports and aliases) and reports every property the declared type does not have.
import { readFileSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const fileCache = new Map();

function resolveDeclarationFile(specifier, fromFile) {
  let base;
  if (specifier.startsWith(".")) {
    base = path.resolve(path.dirname(fromFile), specifier);
  } else {
    const parts = specifier.split("/");
    const packageName = specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
    const packageDir = path.dirname(require.resolve(`${packageName}/package.json`));
    base = path.join(packageDir, ...parts.slice(specifier.startsWith("@") ? 2 : 1));
  }
  for (const candidate of [`${base}.d.ts`, path.join(base, "index.d.ts")]) {
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(`cannot resolve type declarations ${specifier} from ${fromFile}`);
}

function loadFile(file) {
  if (fileCache.has(file)) return fileCache.get(file);
  const text = readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/[^\n]*/g, "");
  const imports = new Map();
  for (const match of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
    for (const item of match[1].split(",")) {
      const [original, alias] = item.trim().split(/\s+as\s+/);
      if (original) imports.set((alias ?? original).trim(), { name: original.trim(), from: match[2] });
    }
  }
  const aliases = new Map();
  for (const match of text.matchAll(/export\s*\{([^}]*)\}/g)) {
    for (const item of match[1].split(",")) {
      const [original, alias] = item.trim().split(/\s+as\s+/);
      if (alias) aliases.set(alias.trim(), original.trim());
    }
  }
  const entry = { file, text, imports, aliases, types: new Map() };
  fileCache.set(file, entry);
  return entry;
}

// Recursive-descent parser over the type text starting at `position`.
class TypeParser {
  constructor(entry, text, position) {
    Object.assign(this, { entry, text, position });
  }
  skip() {
    while (/\s/.test(this.text[this.position] ?? "")) this.position++;
  }
  peek(token) {
    this.skip();
    return this.text.startsWith(token, this.position);
  }
  expect(token) {
    if (!this.peek(token)) throw new Error(`expected '${token}' in ${this.entry.file} at ${this.text.slice(this.position, this.position + 40)}`);
    this.position += token.length;
  }
  union() {
    if (this.peek("|")) this.expect("|");
    const members = [this.postfix()];
    while (this.peek("|")) {
      this.expect("|");
      members.push(this.postfix());
    }
    return members.length === 1 ? members[0] : { kind: "union", members };
  }
  postfix() {
    let type = this.primary();
    while (this.peek("[]")) {
      this.expect("[]");
      type = { kind: "array", of: type };
    }
    return type;
  }
  primary() {
    this.skip();
    const rest = this.text.slice(this.position);
    if (rest.startsWith("{")) return this.object();
    if (rest.startsWith("(")) {
      this.expect("(");
      const inner = this.union();
      this.expect(")");
      return inner;
    }
    if (rest.startsWith("Array<")) {
      this.expect("Array<");
      const of = this.union();
      this.expect(">");
      return { kind: "array", of };
    }
    const literal = rest.match(/^("(?:[^"\\]|\\.)*"|-?\d+(\.\d+)?|true|false|null)/);
    if (literal) {
      this.position += literal[0].length;
      return { kind: "leaf" };
    }
    const identifier = rest.match(/^[A-Za-z_$][\w$.]*/);
    if (!identifier) throw new Error(`cannot parse type in ${this.entry.file} at ${rest.slice(0, 40)}`);
    this.position += identifier[0].length;
    if (this.peek("<")) {  // generic arguments of other types: skip them
      let depth = 0;
      do {
        const character = this.text[this.position++];
        if (character === "<") depth++;
        if (character === ">") depth--;
      } while (depth > 0);
    }
    const name = identifier[0];
    if (["string", "number", "boolean", "any", "unknown", "object", "never", "undefined"].includes(name)) {
      return { kind: name === "any" || name === "unknown" || name === "object" ? "any" : "leaf" };
    }
    return { kind: "ref", name, entry: this.entry };
  }
  object() {
    this.expect("{");
    const props = new Map();
    let index = null;
    while (!this.peek("}")) {
      if (this.peek("[")) {
        this.position = this.text.indexOf("]", this.position) + 1;
        this.expect(":");
        index = this.union();
      } else {
        this.skip();
        const key = this.text.slice(this.position).match(/^("(?:[^"\\]|\\.)*"|[\w$]+)/);
        if (!key) throw new Error(`cannot parse member in ${this.entry.file} at ${this.text.slice(this.position, this.position + 40)}`);
        this.position += key[0].length;
        if (this.peek("?")) this.expect("?");
        this.expect(":");
        props.set(key[0].replace(/^"|"$/g, ""), this.union());
      }
      if (this.peek(";") || this.peek(",")) this.position++;
    }
    this.expect("}");
    return { kind: "object", props, index };
  }
}

function namedType(entry, name) {
  if (entry.types.has(name)) return entry.types.get(name);
  const local = entry.aliases.get(name) ?? name;
  const escaped = local.replace(/\$/g, "\\$");
  const interfaceMatch = new RegExp(`export\\s+interface\\s+${escaped}\\b[^{]*\\{`).exec(entry.text);
  const aliasMatch = new RegExp(`export\\s+(?:declare\\s+)?type\\s+${escaped}\\s*=`).exec(entry.text);
  let type;
  if (interfaceMatch) {
    type = new TypeParser(entry, entry.text, interfaceMatch.index + interfaceMatch[0].length - 1).object();
  } else if (aliasMatch) {
    type = new TypeParser(entry, entry.text, aliasMatch.index + aliasMatch[0].length).union();
  } else if (entry.imports.has(local)) {
    const imported = entry.imports.get(local);
    type = namedType(loadFile(resolveDeclarationFile(imported.from, entry.file)), imported.name);
  } else {
    type = { kind: "any" };  // e.g. TypeMeta-style helpers from @kubernetes-models/base
  }
  entry.types.set(name, type);
  return type;
}

function resolve(type) {
  while (type.kind === "ref") type = namedType(type.entry, type.name);
  return type;
}

function check(value, type, where, problems) {
  type = resolve(type);
  if (value === null || value === undefined) return;
  if (type.kind === "union") {
    const objects = type.members.map(resolve).filter((member) => member.kind === "object");
    const arrays = type.members.map(resolve).filter((member) => member.kind === "array");
    if (Array.isArray(value) && arrays.length === 1) check(value, arrays[0], where, problems);
    else if (typeof value === "object" && !Array.isArray(value) && objects.length === 1) check(value, objects[0], where, problems);
    return;
  }
  if (type.kind === "array" && Array.isArray(value)) {
    value.forEach((item, i) => check(item, type.of, `${where}[${i}]`, problems));
    return;
  }
  if (type.kind === "object" && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, item] of Object.entries(value)) {
      if (type.props.has(key)) check(item, type.props.get(key), `${where}.${key}`, problems);
      else if (type.index) check(item, type.index, `${where}.${key}`, problems);
      else if (type.props.size > 0 || type.index === null) problems.push(`unknown field ${where}.${key}`);
    }
  }
}

// Unknown-field problems of `object`, whose model's declarations are at `declarationFile`.
export function unknownFields(object, declarationFile, interfaceName) {
  const problems = [];
  const entry = loadFile(declarationFile);
  check(object, namedType(entry, interfaceName), object.kind ?? "object", problems);
  return problems;
}

export { resolveDeclarationFile };
