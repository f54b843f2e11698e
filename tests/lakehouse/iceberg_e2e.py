#!/usr/bin/env python3
"""An Iceberg table on an S3 server, written by PyIceberg for the end-to-end test: `shop.person`
(person_id long, country string, spend double; partitioned by country), in a SQL catalog on
SQLite and a warehouse at s3://BUCKET/PREFIXwarehouse.

    iceberg_e2e.py create --db DB --endpoint URL --bucket B --prefix P
        two appends (ids 1..40, 41..80), a schema change (a column `tier` added), and a delete
        (ids 1..5) committed after the data
    iceberg_e2e.py append --db DB --endpoint URL --bucket B --prefix P --first N --last M [--quick]
    iceberg_e2e.py state  --db DB --endpoint URL --bucket B --prefix P

Each prints one JSON line: the table's location, its current snapshot, the data files of that
snapshot, and the members of the test's segment (country "US" and spend over 50) at it.
"""

import argparse
import json

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DoubleType, LongType, NestedField, StringType


def rows(first, last):
    ids = list(range(first, last + 1))
    return pa.table({
        "person_id": pa.array(ids, pa.int64()),
        "country": pa.array([["US", "FR", "DE"][i % 3] for i in ids], pa.string()),
        "spend": pa.array([float((i * 7) % 100) for i in ids], pa.float64()),
    })


def state(table):
    table = table.refresh() if hasattr(table, "refresh") else table
    scan = table.scan()
    data = scan.to_arrow()
    members = sorted(
        str(p) for p, c, s in zip(data["person_id"].to_pylist(), data["country"].to_pylist(), data["spend"].to_pylist()) if c == "US" and s > 50
    )
    files = sorted(task.file.file_path for task in scan.plan_files())
    return {"location": table.metadata.location, "snapshot": table.current_snapshot().snapshot_id, "files": files, "members": sorted(members, key=lambda m: m.encode())}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["create", "append", "state"])
    p.add_argument("--quick", action="store_true", help="print only the location and snapshot (reads no data file)")
    p.add_argument("--db", required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", default="")
    p.add_argument("--first", type=int)
    p.add_argument("--last", type=int)
    a = p.parse_args()
    catalog = SqlCatalog(
        "cohort_e2e",
        uri=f"sqlite:///{a.db}",
        warehouse=f"s3://{a.bucket}/{a.prefix}warehouse",
        **{
            "s3.endpoint": a.endpoint,
            "s3.access-key-id": "cohort-lake-key",
            "s3.secret-access-key": "cohort-lake-secret-0123456789",
            "s3.region": "us-east-1",
            "s3.force-virtual-addressing": "false",
            # fsspec's s3fs rather than pyarrow's S3 client: the latter's multipart uploads
            # carry checksums moto's server refuses.
            "py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO",
        },
    )
    if a.command == "create":
        catalog.create_namespace_if_not_exists("shop")
        schema = Schema(
            NestedField(1, "person_id", LongType(), required=False),
            NestedField(2, "country", StringType(), required=False),
            NestedField(3, "spend", DoubleType(), required=False),
        )
        spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="country"))
        table = catalog.create_table("shop.person", schema=schema, partition_spec=spec)
        table.append(rows(1, 40))
        table.append(rows(41, 80))
        with table.update_schema() as update:
            update.add_column("tier", StringType())
        table = catalog.load_table("shop.person")
        table.delete("person_id <= 5")
    elif a.command == "append":
        table = catalog.load_table("shop.person")
        batch = rows(a.first, a.last)
        batch = batch.append_column("tier", pa.array(["gold"] * batch.num_rows, pa.string()))
        table.append(batch)
    table = catalog.load_table("shop.person")
    if a.quick:
        print(json.dumps({"location": table.metadata.location, "snapshot": table.current_snapshot().snapshot_id}))
    else:
        print(json.dumps(state(table)))


if __name__ == "__main__":
    main()
