// diff.js: a field-level diff of two JSON documents.  Each document is
// flattened to its leaves, keyed by a dotted path (array items as [i]); an
// empty object or array is a leaf of its own.  The diff lists, in path
// order, every path whose value was added, removed or changed.

function flatten(value, path, out) {
  if (Array.isArray(value) && value.length) {
    value.forEach((v, i) => flatten(v, path + "[" + i + "]", out));
  } else if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
    for (const [k, v] of Object.entries(value)) flatten(v, path ? path + "." + k : k, out);
  } else {
    out.set(path, value);
  }
  return out;
}

// [{path, kind: "added"|"removed"|"changed", before, after}], sorted by path.
export function diff(before, after) {
  const a = flatten(before, "", new Map());
  const b = flatten(after, "", new Map());
  const paths = [...new Set([...a.keys(), ...b.keys()])].sort();
  const out = [];
  for (const path of paths) {
    const inA = a.has(path), inB = b.has(path);
    const va = a.get(path), vb = b.get(path);
    if (inA && !inB) out.push({path, kind: "removed", before: va, after: undefined});
    else if (!inA && inB) out.push({path, kind: "added", before: undefined, after: vb});
    else if (JSON.stringify(va) !== JSON.stringify(vb)) out.push({path, kind: "changed", before: va, after: vb});
  }
  return out;
}

// A leaf as the diff table shows it.
export function show(v) {
  return v === undefined ? "" : JSON.stringify(v);
}
