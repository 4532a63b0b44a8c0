"""Validates OCI documents against the OCI image-spec JSON schemas (Debian's
golang-github-opencontainers-image-spec-dev ships them) with PyPI `jsonschema`.

usage: oci_schema.py SCHEMA_DIR KIND=FILE...   (KIND: manifest, index, config)
Prints one line per document; exits 1 when any is invalid.
"""
import json
import pathlib
import sys

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

schema_dir = pathlib.Path(sys.argv[1]).resolve()
# The schemas refer to each other by file name: each is identified by its file's URI.
# Nested schemas' own ids (absolute URIs) are dropped so those names resolve beside the file.


def drop_ids(node):
    if isinstance(node, dict):
        if isinstance(node.get("id"), str) and node["id"].startswith("https://"):
            del node["id"]
        for v in node.values():
            drop_ids(v)
    elif isinstance(node, list):
        for v in node:
            drop_ids(v)


schemas = {}
for path in schema_dir.glob("*.json"):
    doc = json.loads(path.read_text())
    drop_ids(doc)
    doc["id"] = path.as_uri()
    schemas[path.name] = doc
registry = Registry().with_resources(
    (doc["id"], Resource(contents=doc, specification=DRAFT4)) for doc in schemas.values()
)
top = {
    "manifest": "image-manifest-schema.json",
    "index": "image-index-schema.json",
    "config": "config-schema.json",
}
failed = False
for arg in sys.argv[2:]:
    kind, _, file = arg.partition("=")
    schema = schemas[top[kind]]
    validator = jsonschema.Draft4Validator(
        schema, registry=registry, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )
    errors = [e.message for e in validator.iter_errors(json.loads(pathlib.Path(file).read_text()))]
    print(f"{kind} {file}: {'valid' if not errors else 'INVALID: ' + '; '.join(errors)}")
    failed |= bool(errors)
sys.exit(1 if failed else 0)
