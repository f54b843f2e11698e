#!/usr/bin/env python3
"""Writes a model's Parquet objects as lakehouse tables with engines nobody in Cohort wrote:
PyIceberg (a SQL catalog on SQLite, a file or S3 warehouse) or deltalake. Used by the tests.

    write_tables.py iceberg MODEL_DIR OUT_DIR [MODEL_DIR OUT_DIR ...] [--s3-endpoint URL --bucket B --prefix P]
    write_tables.py delta   MODEL_DIR OUT_DIR [MODEL_DIR OUT_DIR ...]

MODEL_DIR holds a model.json whose sources are Parquet folders (`<object>/`); OUT_DIR gets a
model.json naming the tables, relative to OUT_DIR (or, on S3, to s3://B/P<OUT_DIR's name>/,
where the tables are), and the case's segment, as-of and expected members.
Each object's rows go in as two appends (half each), so a table has two snapshots/versions.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def halves(table):
    n = table.num_rows
    return [table.slice(0, n // 2), table.slice(n // 2)]


def plain(table):
    """Large strings and dictionary columns as plain ones (what both writers take as is)."""
    fields = []
    for f in table.schema:
        t = f.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        fields.append(pa.field(f.name, t, nullable=True))
    return table.cast(pa.schema(fields))


def write(args, model_dir, out):
    out.mkdir(parents=True, exist_ok=True)
    model = json.loads((model_dir / "model.json").read_text())
    if args.engine == "iceberg":
        from pyiceberg.catalog.sql import SqlCatalog

        props = {"uri": f"sqlite:///{out.resolve()}/catalog.db"}
        # On S3 each OUT_DIR's tables go under PREFIX<OUT_DIR's name>/.
        prefix = f"{args.prefix}{out.name}/"
        if args.s3_endpoint:
            props.update({
                "warehouse": f"s3://{args.bucket}/{prefix}warehouse",
                "s3.endpoint": args.s3_endpoint,
                "s3.access-key-id": "cohort-test",
                "s3.secret-access-key": "cohort-test-secret",
                "s3.region": "us-east-1",
                "s3.force-virtual-addressing": "false",
                # s3fs rather than pyarrow's S3 client, whose multipart uploads carry
                # checksums moto's server refuses.
                "py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO",
            })
        else:
            (out / "warehouse").mkdir(exist_ok=True)
            props["warehouse"] = f"file://{(out / 'warehouse').resolve()}"
        catalog = SqlCatalog("cohort_test", **props)
        catalog.create_namespace_if_not_exists("cases")
    for o in model["objects"]:
        source = model_dir / o["source"]["path"]
        rows = plain(pq.read_table(source))
        name = o["name"]
        if args.engine == "iceberg":
            table = catalog.create_table(f"cases.{name}", schema=rows.schema)
            for part in halves(rows):
                table.append(part)
            location = table.metadata.location
            root = f"s3://{args.bucket}/{prefix}"
            if args.s3_endpoint and location.startswith(root):
                location = location[len(root):]
            elif location.startswith("file://"):
                location = str(Path(location[len("file://"):]).resolve().relative_to(out.resolve()))
            o["source"] = {"format": "iceberg", "path": location}
        else:
            from deltalake import write_deltalake

            path = out / "delta" / name
            for part in halves(rows):
                write_deltalake(str(path), part, mode="append")
            o["source"] = {"format": "delta", "path": f"delta/{name}"}
    (out / "model.json").write_text(json.dumps(model))
    for name in ("segment.json", "as_of.txt", "expected.txt", "expect_exit.txt"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, out / name)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("engine", choices=["iceberg", "delta"])
    p.add_argument("dirs", nargs="+", help="MODEL_DIR OUT_DIR pairs")
    p.add_argument("--s3-endpoint")
    p.add_argument("--bucket")
    p.add_argument("--prefix", default="")
    args = p.parse_args()
    if len(args.dirs) % 2:
        p.error("give MODEL_DIR OUT_DIR pairs")
    for i in range(0, len(args.dirs), 2):
        write(args, Path(args.dirs[i]), Path(args.dirs[i + 1]))


if __name__ == "__main__":
    sys.exit(main())
