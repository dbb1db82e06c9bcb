# The `deltalake` package's fastest form of what `sluice bench --keyed` times sluice doing:
# a change file merged into a keyed Delta table. The change file is read with pyarrow, the last
# change of each key (by ts) kept, and MERGE applies it: D deletes, others upsert, a change older
# than the table's row is ignored. Usage: keyed_merge.py TABLE CHANGES.csv
import os, sys
import pyarrow as pa, pyarrow.csv as pv, pyarrow.compute as pc
from deltalake import DeltaTable

table, csv = sys.argv[1], sys.argv[2]
dt = DeltaTable(table)
src = pv.read_csv(csv, convert_options=pv.ConvertOptions(column_types={
    "Op": pa.string(), "id": pa.int64(), "name": pa.string(), "amount": pa.decimal128(18, 2),
    "ts": pa.int64(), "d": pa.date32()}))
src = src.rename_columns(["op" if c == "Op" else c for c in src.column_names])
# The last change of each key: sorted by (id, ts), the last row of each id.
src = src.sort_by([("id", "ascending"), ("ts", "ascending")])
ids = src.column("id").combine_chunks()
last = pc.not_equal(ids.slice(0, len(ids) - 1), ids.slice(1)).to_pylist() + [True]
src = src.filter(pa.array(last))
src = src.append_column("year", pc.year(src.column("d")).cast(pa.int64()))
cols = ["id", "name", "amount", "ts", "d", "year"]
(dt.merge(src, predicate="t.id = s.id", source_alias="s", target_alias="t")
   .when_matched_delete(predicate="s.op = 'D' AND s.ts >= t.ts")
   .when_matched_update(predicate="s.op <> 'D' AND s.ts >= t.ts",
                        updates={c: f"s.{c}" for c in cols if c != "id"})
   .when_not_matched_insert(predicate="s.op <> 'D'", updates={c: f"s.{c}" for c in cols})
   .execute())
sys.stdout.flush()
os._exit(0)
