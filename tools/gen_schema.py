#!/usr/bin/python3
"""gen_schema: translates the seed spec's Payment definition into C tables.

Usage: /usr/bin/python3 tools/gen_schema.py spec/seed-swagger.yml > src/payment/schema_gen.c
(`make schema`).  `make check-schema` fails when the committed output is stale.

Reads the Swagger 2.0 file, resolves $ref, and walks everything the
`Payment` definition declares under `attributes` (nested objects, arrays
and their items, referenced definitions), plus the envelope members of
`Payment` itself (type, version, organisation_id).  It prints the nodes of
src/payment/schema.h as static const tables.

Translated: type, format (uuid, date, date-time), pattern (kept only when
POSIX extended and ECMA-262 read it alike), enum, x-length (on a string:
most characters; on an array of strings: most characters of each item),
minimum (integers), items, properties, required.  Documentation keys are
ignored.  Anything else makes it stop with a message and exit status 1,
so that a rule of the spec is never silently dropped.

Output is deterministic: members are sorted by name, tables are named after
their place in the spec, and nothing depends on the environment.
"""

import os
import re
import sys

import yaml

# Keys that only document a schema; they carry no rule a request must obey.
DOC_KEYS = {
    "description",
    "example",
    "x-description",
    "x-availability",
    "x-omitempty",  # serialisation hint of the original service
    "x-nullable",   # null is accepted for every optional attribute anyway
    "x-access",
}

# Keys translated into a node.
RULE_KEYS = {
    "type",
    "format",
    "pattern",
    "enum",
    "x-length",
    "minimum",
    "items",
    "properties",
    "required",
}

TYPES = {
    "string": "SCHEMA_STRING",
    "integer": "SCHEMA_INTEGER",
    "number": "SCHEMA_NUMBER",
    "boolean": "SCHEMA_BOOLEAN",
    "object": "SCHEMA_OBJECT",
    "array": "SCHEMA_ARRAY",
}

FORMATS = {
    None: "SCHEMA_FORMAT_NONE",
    "uuid": "SCHEMA_FORMAT_UUID",
    "date": "SCHEMA_FORMAT_DATE",
    "date-time": "SCHEMA_FORMAT_DATE_TIME",
}

# The Payment members that validate.c owns: attributes is its own root
# (schema_payment_attributes) and relationships are stored as given.
ENVELOPE_EXCLUDED = {"attributes", "relationships"}


class SpecError(Exception):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate mapping keys: PyYAML would
    otherwise keep the last one and silently drop a block of rules."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise SpecError(
                "line %d: duplicate key %r (first at line %d)"
                % (key_node.start_mark.line + 1, key, seen[key])
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    lambda loader, node: dict(_construct_mapping(loader, node, deep=True)),
)


def c_string(text):
    """A C string literal holding text's UTF-8 bytes."""
    out = ['"']
    prev = ""
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "?" and prev == "?":
            out.append("\\?")  # no trigraphs
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append("\\%03o" % byte)
        prev = ch
    out.append('"')
    return "".join(out)


def c_ident(text):
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


# ECMA-262 and POSIX ERE read these alike; anything else (escapes, groups
# with ?, lazy quantifiers, classes such as \d) is refused.
_ERE_SAFE = re.compile(r"^[A-Za-z0-9 _.,:;/+*?{}()\[\]|^$&#%@!=<>'\"~`-]*$")


def check_pattern(pattern, where):
    if not isinstance(pattern, str):
        raise SpecError("%s: pattern is not a string" % where)
    if not _ERE_SAFE.match(pattern) or re.search(r"[*+?}]\?|\(\?", pattern):
        raise SpecError(
            "%s: pattern %r uses syntax that POSIX ERE reads differently" % (where, pattern)
        )
    try:
        re.compile(pattern)
    except re.error as e:
        raise SpecError("%s: pattern %r does not compile: %s" % (where, pattern, e))
    return pattern


class Generator:
    def __init__(self, spec):
        if not isinstance(spec, dict) or not isinstance(spec.get("definitions"), dict):
            raise SpecError("no definitions")
        self.defs = spec["definitions"]
        self.decls = []          # C declarations, children before parents
        self.patterns = []       # distinct patterns, in order of first use
        self.shared = {}         # definition name -> (properties table, count) or enum table
        self.expanding = []      # definitions being walked, to refuse recursive ones

    def resolve(self, schema, where):
        """Follows $ref; returns (schema, definition name or None)."""
        seen = []
        name = None
        while isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            rules = set(schema) & RULE_KEYS
            if rules:
                # Swagger 2 ignores siblings of $ref: a rule there would be lost.
                raise SpecError("%s: $ref %s has sibling rules %s" % (where, ref, sorted(rules)))
            unknown = set(schema) - DOC_KEYS - {"$ref"}
            if unknown:
                raise SpecError("%s: unknown keys beside $ref: %s" % (where, sorted(unknown)))
            if not isinstance(ref, str) or not ref.startswith("#/definitions/"):
                raise SpecError("%s: unsupported $ref %r" % (where, ref))
            name = ref[len("#/definitions/"):]
            if name in seen:
                raise SpecError("%s: circular $ref %s" % (where, name))
            seen.append(name)
            if name not in self.defs:
                raise SpecError("%s: $ref to missing definition %s" % (where, name))
            schema = self.defs[name]
        if not isinstance(schema, dict):
            raise SpecError("%s: schema is %r, not a mapping" % (where, schema))
        unknown = set(schema) - DOC_KEYS - RULE_KEYS
        if unknown:
            raise SpecError("%s: cannot translate %s" % (where, ", ".join(sorted(unknown))))
        return schema, name

    def pattern_index(self, pattern):
        if pattern not in self.patterns:
            self.patterns.append(pattern)
        return self.patterns.index(pattern)

    def node(self, schema, where, ident, name, required, item_length=None):
        """Returns the fields of one node, emitting its child tables."""
        schema, defname = self.resolve(schema, where)
        if defname in self.expanding:
            raise SpecError("%s: %s refers to itself, which the tables do not support" % (where, defname))
        if defname:
            self.expanding.append(defname)
        fields = self.node_fields(schema, where, ident, name, required, item_length, defname)
        if defname:
            self.expanding.pop()
        return fields

    def node_fields(self, schema, where, ident, name, required, item_length, defname):
        typ = schema.get("type")
        if typ not in TYPES:
            raise SpecError("%s: unsupported type %r" % (where, typ))
        fmt = schema.get("format")
        if fmt not in FORMATS:
            raise SpecError("%s: unsupported format %r" % (where, fmt))
        if fmt is not None and typ != "string":
            raise SpecError("%s: format on a %s" % (where, typ))

        fields = {
            "name": c_string(name) if name is not None else "NULL",
            "type": TYPES[typ],
            "format": FORMATS[fmt],
            "pattern": "NULL",
            "pattern_id": "0",
            "enum_values": "NULL",
            "enum_text": "NULL",
            "max_length": "0",
            "required": "1" if required else "0",
            "has_minimum": "0",
            "minimum": "0",
            "items": "NULL",
            "properties": "NULL",
            "property_count": "0",
        }

        if "pattern" in schema:
            if typ != "string":
                raise SpecError("%s: pattern on a %s" % (where, typ))
            pattern = check_pattern(schema["pattern"], where)
            fields["pattern"] = c_string(pattern)
            fields["pattern_id"] = str(self.pattern_index(pattern))

        if "enum" in schema:
            fields["enum_values"], fields["enum_text"] = self.enum_table(
                schema["enum"], typ, where, defname or ident
            )

        length = schema.get("x-length")
        if length is not None:
            if not isinstance(length, int) or isinstance(length, bool) or length < 1:
                raise SpecError("%s: x-length %r is not a count" % (where, length))
            if typ not in ("string", "array"):
                raise SpecError("%s: x-length on a %s" % (where, typ))
        if item_length is not None:
            if typ != "string":
                raise SpecError("%s: x-length of an array whose items are %s" % (where, typ))
            if length is not None and length != item_length:
                raise SpecError("%s: x-length %d disagrees with its array's %d"
                                % (where, length, item_length))
            length = item_length
        if length is not None and typ == "string":
            fields["max_length"] = str(length)

        if "minimum" in schema:
            minimum = schema["minimum"]
            if typ != "integer" or not isinstance(minimum, int) or isinstance(minimum, bool):
                raise SpecError("%s: minimum %r on a %s" % (where, minimum, typ))
            fields["has_minimum"] = "1"
            fields["minimum"] = str(minimum)

        if "items" in schema:
            if typ != "array":
                raise SpecError("%s: items on a %s" % (where, typ))
        if typ == "array":
            if "items" not in schema:
                raise SpecError("%s: array without items" % where)
            item_ident = ident + "_item"
            item = self.node(schema["items"], where + "[]", item_ident, None, False,
                             item_length=length)
            self.decls.append(self.initializer(
                item, "static const struct schema_node schema_%s = " % item_ident) + ";\n")
            fields["items"] = "&schema_" + item_ident

        if "properties" in schema or "required" in schema:
            if typ != "object":
                raise SpecError("%s: properties on a %s" % (where, typ))
        if typ == "object" and "properties" in schema:
            table, count = self.properties_table(schema, where, defname, ident)
            fields["properties"] = table
            fields["property_count"] = str(count)

        return fields

    def enum_table(self, values, typ, where, ident):
        if typ != "string":
            raise SpecError("%s: enum on a %s" % (where, typ))
        if not isinstance(values, list) or not values:
            raise SpecError("%s: enum is not a list of values" % where)
        for v in values:
            if not isinstance(v, str):
                raise SpecError("%s: enum value %r is not a string" % (where, v))
        if len(set(values)) != len(values):
            raise SpecError("%s: enum repeats a value" % where)
        key = ("enum", ident)
        if key not in self.shared:
            table = "schema_enum_" + c_ident(ident)
            body = "".join("    %s,\n" % c_string(v) for v in values)
            self.decls.append("static const char *const %s[] = {\n%s    NULL,\n};\n"
                              % (table, body))
            self.shared[key] = (table, c_string(", ".join(values)))
        return self.shared[key]

    def properties_table(self, schema, where, defname, ident, exclude=()):
        props = schema.get("properties")
        if not isinstance(props, dict):
            raise SpecError("%s: properties is not a mapping" % where)
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SpecError("%s: required is not a list of names" % where)
        for r in required:
            if r not in props:
                raise SpecError("%s: required %r is not a property" % (where, r))
        # A referenced definition's table is emitted once and shared.
        key = ("props", defname) if defname else None
        if key and key in self.shared:
            return self.shared[key]
        base = "def_" + c_ident(defname) if defname else ident
        entries = []
        for pname in sorted(props):
            if pname in exclude:
                continue
            if not isinstance(pname, str) or not pname:
                raise SpecError("%s: bad property name %r" % (where, pname))
            entries.append(self.node(props[pname], "%s.%s" % (where, pname),
                                     base + "_" + c_ident(pname), pname, pname in required))
        table = "schema_" + base + "_members"
        body = "".join("%s,\n" % self.initializer(e) for e in entries)
        self.decls.append("static const struct schema_node %s[] = {\n%s};\n" % (table, body))
        result = (table, len(entries))
        if key:
            self.shared[key] = result
        return result

    @staticmethod
    def initializer(fields, lead="    "):
        """lead, then one designated initializer with the members left at zero
        omitted, wrapped to lines of at most 100 columns.  A lead that starts
        a declaration gets the members on their own lines."""
        parts = [".%s = %s" % (k, v) for k, v in fields.items()
                 if v not in ("0", "NULL", "SCHEMA_FORMAT_NONE")
                 or (k == "minimum" and fields["has_minimum"] == "1")]
        block = not lead.isspace()
        lines = []
        line = lead + "{"
        if block:
            lines.append(line)
            line = "   "
        for i, part in enumerate(parts):
            piece = part + ("," if block or i + 1 < len(parts) else "}")
            room = 100 if block or i + 1 < len(parts) else 99  # tables add a comma
            if len(line) + 1 + len(piece) > room and not line.endswith("{") and line.strip():
                lines.append(line)
                line = ("   " if block else "       ") + " " + piece
            else:
                line += ("" if line.endswith("{") else " ") + piece
        if block:
            lines.append(line)
            line = "}"
        elif not parts:
            line += "}"
        lines.append(line)
        return "\n".join(lines)

    def run(self, spec_path):
        payment = self.defs.get("Payment")
        if not isinstance(payment, dict):
            raise SpecError("no Payment definition")
        payment, _ = self.resolve(payment, "Payment")
        props = payment.get("properties")
        if payment.get("type") != "object" or not isinstance(props, dict):
            raise SpecError("Payment is not an object with properties")
        if "attributes" not in props:
            raise SpecError("Payment declares no attributes")

        attributes = self.node(props["attributes"], "Payment.attributes",
                               "attributes", None, False)
        attr_schema, _ = self.resolve(props["attributes"], "Payment.attributes")
        if attr_schema.get("type") != "object":
            raise SpecError("Payment.attributes is not an object")

        envelope_schema = {"type": "object", "properties": props,
                           "required": [r for r in payment.get("required", [])
                                        if r not in ENVELOPE_EXCLUDED]}
        table, count = self.properties_table(envelope_schema, "Payment", None, "envelope",
                                             exclude=ENVELOPE_EXCLUDED)
        envelope = {
            "name": "NULL", "type": "SCHEMA_OBJECT", "format": "SCHEMA_FORMAT_NONE",
            "pattern": "NULL", "pattern_id": "0", "enum_values": "NULL", "enum_text": "NULL",
            "max_length": "0", "required": "0", "has_minimum": "0", "minimum": "0",
            "items": "NULL", "properties": table, "property_count": str(count),
        }

        out = []
        out.append("/* GENERATED FILE, do not edit: the rules of the Payment definition of\n")
        out.append(" * %s, as the nodes of schema.h.\n" % spec_path)
        out.append(" * Regenerate with `make schema`, which runs\n")
        out.append(" *   /usr/bin/python3 tools/gen_schema.py %s > src/payment/schema_gen.c\n"
                   % spec_path)
        out.append(" * and `make check-schema` fails when this file is stale. */\n")
        out.append('#include "payment/schema.h"\n\n#include <stddef.h>\n\n')
        out.append("const char *const schema_patterns[] = {\n")
        for p in self.patterns:
            out.append("    %s,\n" % c_string(p))
        out.append("};\n")
        out.append("const size_t schema_pattern_count = %d;\n\n" % len(self.patterns))
        for d in self.decls:
            out.append(d)
            out.append("\n")
        out.append(self.initializer(
            attributes, "const struct schema_node schema_payment_attributes = ") + ";\n\n")
        out.append(self.initializer(
            envelope, "const struct schema_node schema_payment_envelope = ") + ";\n")
        return "".join(out)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: gen_schema.py SPEC.yml > schema_gen.c\n")
        return 2
    path = argv[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shown = os.path.relpath(os.path.abspath(path), root)
    try:
        with open(path, encoding="utf-8") as f:
            spec = yaml.load(f, Loader=UniqueKeyLoader)
        text = Generator(spec).run(shown)
    except (OSError, yaml.YAMLError, SpecError) as e:
        sys.stderr.write("gen_schema: %s: %s\n" % (path, e))
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
