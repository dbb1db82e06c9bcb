//! A Delta table shared with other writers: the `deltalake` package writes the same tables
//! (appends, deletes, added columns, constraints, enabled features), before and while sluice
//! does, and Databricks' and Spark's reference tables are read, appended to, compacted and
//! repaired. Counts come from readers sluice does not control (DuckDB's Delta extension, Polars,
//! `deltalake`).

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{ok, sluice};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a `deltalake` script on the table at `path` (argv[1]), then leaves at once (the Rust
/// thread pools can abort the interpreter's teardown after the work is done).
fn deltalake(path: &Path, body: &str) -> String {
    let script = format!(
        "import os, sys, datetime, pyarrow as pa\nfrom deltalake import DeltaTable, write_deltalake\npath = sys.argv[1]\n{body}\nsys.stdout.flush()\nos._exit(0)\n"
    );
    common::python(&script, &[path.to_str().unwrap()], "deltalake and pyarrow")
}

/// "rows distinct_ids sum" of the table by DuckDB's Delta extension, Polars and `deltalake`,
/// one line each.
fn three_readers(path: &Path, id: &str, value: &str) -> String {
    readers(path, id, value, true)
}

/// [`three_readers`], or without Polars, which reads no table with V2 checkpoints ("requires
/// reader features ['v2Checkpoint'], which polars does not support"): then two lines.
fn readers(path: &Path, id: &str, value: &str, polars: bool) -> String {
    let script = r#"
import os, sys, polars as pl, deltalake, pyarrow as pa
path, id, v, with_polars = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
con = duckdb_connect("delta")
print(*con.execute(f"SELECT count(*), count(DISTINCT {id}), sum({v}) FROM delta_scan('{path}')").fetchone())
if with_polars:
    print(*pl.scan_delta(path).select(pl.len(), pl.col(id).n_unique().alias("d"), pl.col(v).sum().alias("s")).collect().row(0))
# deltalake's own engine: its pyarrow path reads no table with deletion vectors.
q = deltalake.QueryBuilder().register("t", deltalake.DeltaTable(path))
r = pa.table(q.execute(f"SELECT count(*) AS n, count(DISTINCT {id}) AS d, sum({v}) AS s FROM t").read_all())
print(*r.to_pylist()[0].values(), flush=True)
con.close()
os._exit(0)
"#;
    common::python(
        script,
        &[
            path.to_str().unwrap(),
            id,
            value,
            if polars { "1" } else { "0" },
        ],
        "duckdb (delta extension), polars and deltalake",
    )
}

fn agree(got: &str, want: &str) {
    let lines: Vec<&str> = got.lines().collect();
    assert!(lines.len() >= 2, "{got}");
    for l in lines {
        assert_eq!(l, want, "readers disagree:\n{got}");
    }
}

/// The JSON versions of a table's log.
fn versions(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count()
}

/// Every file under `dir` (relative paths), sorted: to show a table untouched.
fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn csv(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_table_of_another_engine_is_adopted_with_its_partitioning_and_features() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let table = home.join("lake/sales");
    std::fs::create_dir_all(&table).unwrap();
    // Another engine's table: partitioned by region, append-only.
    deltalake(
        &table,
        r#"
t = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "region": ["eu", "us", "eu"],
              "amount": pa.array([1.5, 2.5, 3.0], pa.float64()),
              "d": pa.array([datetime.date(2024, 1, 1)] * 3, pa.date32())})
write_deltalake(path, t, partition_by=["region"], configuration={"delta.appendOnly": "true"})
"#,
    );
    let more = csv(
        dir.path(),
        "more.csv",
        "id,region,amount,d\n4,eu,4.0,2024-02-01\n5,ap,5.5,2024-03-01\n",
    );
    // A partitioning the table does not have is refused with the table's own, and nothing is
    // written.
    let before = tree(&table);
    let bad = sluice(
        &home,
        &[
            "convert",
            more.to_str().unwrap(),
            "--table",
            "sales",
            "--partition-by",
            "year(d)",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("partitioned by region")
            && stderr(&bad).contains("--partition-by year(d) disagrees"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(tree(&table), before);
    // Without one, the table is written as it is partitioned.
    ok(&sluice(
        &home,
        &["convert", more.to_str().unwrap(), "--table", "sales"],
    ));
    assert!(
        std::fs::read_dir(table.join("region=ap"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
    );
    agree(&three_readers(&table, "id", "amount"), "5 5 16.5");
    let q = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n, sum(amount) AS s FROM sales WHERE region = 'eu'",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(q, "n,s\n3,8.5\n");
    // sluice's files name their writer as parquet-java parses it, so Spark, Hive and Trino use
    // their statistics.
    let made_by = common::python(
        r#"
import glob, os, re, sys, pyarrow.parquet as pq
f = [p for p in glob.glob(sys.argv[1] + "/region=ap/*.parquet")][0]
print(pq.ParquetFile(f).metadata.created_by)
"#,
        &[table.to_str().unwrap()],
        "pyarrow",
    );
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        made_by.starts_with(&format!("sluice version {version} (build "))
            && made_by.ends_with(')')
            && made_by.len() > format!("sluice version {version} (build )").len(),
        "{made_by}"
    );
    // Still append-only for the engine that made it: sluice's commits are appends.
    let log = deltalake(
        &table,
        "print(DeltaTable(path).metadata().configuration.get('delta.appendOnly'))",
    );
    assert_eq!(log, "true");
    // The table keeps removed files two days (another engine's setting): a vacuum with a
    // shorter retention is refused, one that keeps them runs.
    deltalake(
        &table,
        "DeltaTable(path).alter.set_table_properties({'delta.deletedFileRetentionDuration': 'interval 2 days'})",
    );
    let short = sluice(&home, &["vacuum", "--table", "sales", "--retain", "1h"]);
    assert!(!short.status.success());
    assert!(
        stderr(&short).contains("keeps removed files for 48 h"),
        "{}",
        stderr(&short)
    );
    ok(&sluice(
        &home,
        &["vacuum", "--table", "sales", "--retain", "48h"],
    ));
    agree(&three_readers(&table, "id", "amount"), "5 5 16.5");
}

#[test]
fn generated_columns_are_computed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let generated = home.join("lake/generated");
    std::fs::create_dir_all(&generated).unwrap();
    deltalake(
        &generated,
        r#"
schema = pa.schema([pa.field("id", pa.int64()),
                    pa.field("twice", pa.int64(), metadata={"delta.generationExpression": "id * 2"})])
DeltaTable.create(path, schema=schema)
write_deltalake(path, pa.table({"id": pa.array([1], pa.int64())}), mode="append")
"#,
    );
    // Rows without the column get it computed; rows with the right value keep it.
    let rows = csv(dir.path(), "g.csv", "id\n2\n3\n");
    ok(&sluice(
        &home,
        &["convert", rows.to_str().unwrap(), "--table", "generated"],
    ));
    let given = csv(dir.path(), "g2.csv", "id,twice\n4,8\n");
    ok(&sluice(
        &home,
        &["convert", given.to_str().unwrap(), "--table", "generated"],
    ));
    agree(&readers(&generated, "id", "twice", true), "4 4 20");
    // A value that is not the expression's is refused, naming the column.
    let before = tree(&generated);
    let wrong = csv(dir.path(), "g3.csv", "id,twice\n5,11\n");
    let out = sluice(
        &home,
        &["convert", wrong.to_str().unwrap(), "--table", "generated"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("break the constraint generated column twice"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree(&generated), before);
}

#[test]
fn features_sluice_does_not_implement_are_refused_and_the_table_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // Another engine turns on icebergCompatV1 (its writers must keep the table readable as
    // Iceberg, which sluice does not): refused before anything is written or registered.
    let table = home.join("lake/iceberg");
    std::fs::create_dir_all(&table).unwrap();
    deltalake(
        &table,
        r#"
from deltalake import TableFeatures
write_deltalake(path, pa.table({"id": pa.array([1], pa.int64()), "region": ["eu"]}), partition_by=["region"])
DeltaTable(path).alter.add_feature(TableFeatures.IcebergCompatV1, allow_protocol_versions_increase=True)
"#,
    );
    let rows = csv(dir.path(), "i.csv", "id,region\n2,us\n");
    let before = tree(&table);
    let out = sluice(
        &home,
        &["convert", rows.to_str().unwrap(), "--table", "iceberg"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Delta feature icebergCompatV1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree(&table), before);
    let list = ok(&sluice(&home, &["catalog", "tables"]));
    assert!(!list.contains("iceberg"), "{list}");
}

#[test]
fn column_mapped_tables_are_written_with_physical_names_and_field_ids() {
    for mode in ["name", "id"] {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let table = home.join("lake/mapped");
        std::fs::create_dir_all(&table).unwrap();
        deltalake(
            &table,
            &format!(
                r#"
schema = pa.schema([("id", pa.int64()), ("region", pa.string())])
DeltaTable.create(path, schema=schema, configuration={{"delta.columnMapping.mode": "{mode}"}})
write_deltalake(path, pa.table({{"id": pa.array([1, 2], pa.int64()), "region": ["eu", "us"]}}), mode="append")
"#
            ),
        );
        let rows = csv(dir.path(), "m.csv", "id,region\n3,us\n4,eu\n");
        ok(&sluice(
            &home,
            &["convert", rows.to_str().unwrap(), "--table", "mapped"],
        ));
        agree(&readers(&table, "id", "id", false), "4 4 10");
        // sluice's file names its columns as the table's mapping does, with field ids.
        let columns = common::python(
            r#"
import json, sys, pyarrow.parquet as pq
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1])
phys = {f["name"]: (f["metadata"]["delta.columnMapping.physicalName"], f["metadata"]["delta.columnMapping.id"])
        for f in json.loads(dt.schema().to_json())["fields"]}
# sluice names its files part-<UUIDv7>.parquet; deltalake's end in -c000.<codec>.parquet.
ours = [f for f in dt.file_uris() if "-c000" not in f]
ok = []
for f in ours:
    s = pq.read_schema(f.replace("file://", ""))
    ok.append(all(s.field(i).name == phys[n][0] and int(s.field(i).metadata[b"PARQUET:field_id"]) == phys[n][1]
                  for i, n in enumerate(["id", "region"])))
print(len(ok), all(ok))
"#,
            &[table.to_str().unwrap()],
            "deltalake and pyarrow",
        );
        assert_eq!(columns, "1 True", "mode {mode}");
        // Compaction reads the other writer's files by physical name and writes its own so.
        ok(&sluice(
            &home,
            &["compact", "--table", "mapped", "--target-size", "1MiB"],
        ));
        agree(&readers(&table, "id", "id", false), "4 4 10");
        // A source with a column the table lacks: added under its own id and physical name,
        // and every reader sees it.
        let wider = csv(dir.path(), "w.csv", "id,region,note\n5,eu,x\n");
        ok(&sluice(
            &home,
            &["convert", wider.to_str().unwrap(), "--table", "mapped"],
        ));
        agree(&readers(&table, "note", "id", false), "5 1 15");
        let note = deltalake(
            &table,
            r#"
import json
f = [f for f in json.loads(DeltaTable(path).schema().to_json())["fields"] if f["name"] == "note"][0]
print(f["metadata"]["delta.columnMapping.physicalName"].startswith("col-"), f["metadata"]["delta.columnMapping.id"])
"#,
        );
        assert_eq!(note, "True 3", "mode {mode}");
    }
}

/// A column-mapped table with a struct, a list of structs and a map of structs (another
/// engine's, in modes `name` and `id`): sluice writes every nested field under its physical name
/// and field id, adds the struct fields its rows bring with ids and physical names of their own,
/// and compacts by physical name; DuckDB and `deltalake` read every value (Polars reads no
/// column-mapped table).
#[test]
fn column_mapped_tables_with_nested_columns_are_written_by_physical_name() {
    for mode in ["name", "id"] {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let table = home.join("lake/mapped");
        std::fs::create_dir_all(&table).unwrap();
        deltalake(
            &table,
            &format!(
                r#"
user = pa.struct([("uid", pa.int64()), ("name", pa.string())])
schema = pa.schema([("id", pa.int64()), ("user", user), ("tags", pa.list_(pa.struct([("k", pa.string())]))),
                    ("attrs", pa.map_(pa.string(), pa.struct([("v", pa.int32())])))])
DeltaTable.create(path, schema=schema, configuration={{"delta.columnMapping.mode": "{mode}"}})
"#
            ),
        );
        let rows = dir.path().join("rows.jsonl");
        let mut text = String::new();
        for i in 1..=300u64 {
            // From row 101 the struct gains `nick`, and the list's structs `w`.
            let (nick, w) = if i > 100 {
                (
                    format!(r#", "nick": "k{}""#, i % 7),
                    format!(r#", "w": {i}"#),
                )
            } else {
                (String::new(), String::new())
            };
            text.push_str(&format!(
                r#"{{"id": {i}, "user": {{"uid": {}, "name": "n{}"{nick}}}, "tags": [{{"k": "t{}"{w}}}], "attrs": {{"a{}": {{"v": {}}}}}}}"#,
                i * 10,
                i % 5,
                i % 3,
                i % 4,
                i % 9
            ));
            text.push('\n');
        }
        std::fs::write(&rows, &text).unwrap();
        // Two sources, so that compaction has two files to merge, one written before the fields
        // were added.
        let (first, second): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
                <= 100
        });
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        std::fs::write(&a, first.join("\n")).unwrap();
        std::fs::write(&b, second.join("\n")).unwrap();
        ok(&sluice(
            &home,
            &["convert", a.to_str().unwrap(), "--table", "mapped"],
        ));
        ok(&sluice(
            &home,
            &["convert", b.to_str().unwrap(), "--table", "mapped"],
        ));
        let check = |stage: &str| {
            let got = common::python(
                r#"
import json, os, sys
import pyarrow as pa, deltalake
path, src = sys.argv[1], sys.argv[2]
def norm(r):
    u = r["user"]
    return (r["id"], u["uid"], u["name"], u.get("nick"), tuple((t["k"], t.get("w")) for t in r["tags"]),
            tuple(sorted((k, v["v"]) for k, v in (r["attrs"].items() if isinstance(r["attrs"], dict) else r["attrs"]))))
want = sorted(norm(json.loads(l)) for l in open(src))
con = duckdb_connect("delta")
duck = con.execute(f"SELECT * FROM delta_scan('{path}') ORDER BY id").to_arrow_table().to_pylist()
q = deltalake.QueryBuilder().register("t", deltalake.DeltaTable(path))
dl = pa.table(q.execute("SELECT * FROM t ORDER BY id").read_all()).to_pylist()
for name, got in (("duckdb", duck), ("deltalake", dl)):
    got = sorted(norm(r) for r in got)
    assert got == want, (name, [(g, w) for g, w in zip(got, want) if g != w][:3])
schema = json.loads(deltalake.DeltaTable(path).schema().to_json())
user = [f for f in schema["fields"] if f["name"] == "user"][0]
nick = [f for f in user["type"]["fields"] if f["name"] == "nick"][0]["metadata"]
print(len(duck), nick["delta.columnMapping.physicalName"].startswith("col-"), nick["delta.columnMapping.id"],
      deltalake.DeltaTable(path).metadata().configuration["delta.columnMapping.maxColumnId"])
os._exit(0)
"#,
                &[table.to_str().unwrap(), rows.to_str().unwrap()],
                "duckdb (delta extension) and deltalake",
            );
            // The table had ids 1 to 8; `nick` and `w` take 9 and 10.
            assert_eq!(got, "300 True 9 10", "mode {mode}, {stage}");
        };
        check("appended");
        // sluice's files name the struct's fields by their physical names, with field ids.
        let names = common::python(
            r#"
import json, sys, glob, pyarrow.parquet as pq
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1])
user = [f for f in json.loads(dt.schema().to_json())["fields"] if f["name"] == "user"][0]
want = [(f["metadata"]["delta.columnMapping.physicalName"], f["metadata"]["delta.columnMapping.id"]) for f in user["type"]["fields"]]
ok = []
for f in dt.file_uris():
    s = pq.read_schema(f.replace("file://", ""))
    col = s.field(user["metadata"]["delta.columnMapping.physicalName"]).type
    got = [(col.field(i).name, int(col.field(i).metadata[b"PARQUET:field_id"])) for i in range(col.num_fields)]
    ok.append(got == want[:len(got)])
print(len(ok), all(ok))
"#,
            &[table.to_str().unwrap()],
            "deltalake and pyarrow",
        );
        assert_eq!(names, "2 True", "mode {mode}");
        ok(&sluice(&home, &["compact", "--table", "mapped"]));
        check("compacted");
    }
}

/// Column defaults (`allowColumnDefaults`, set by another engine): a column a source lacks
/// takes its default, evaluated from its expression (`40 + 2`), through `convert` of CSV and
/// JSON lines and through the queue, also after schema evolution rebuilt the table's layout; a
/// source that has the column and no value in it gives NULL. DuckDB and `deltalake` read it.
#[test]
fn column_defaults_fill_in_the_columns_a_source_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let table = home.join("lake/t");
    std::fs::create_dir_all(&table).unwrap();
    deltalake(
        &table,
        r#"
import json
schema = pa.schema([("id", pa.int64()), ("region", pa.string()), ("status", pa.string()), ("score", pa.int32())])
DeltaTable.create(path, schema=schema)
meta = [json.loads(l) for l in open(f"{path}/_delta_log/00000000000000000000.json") if "metaData" in l][0]["metaData"]
s = json.loads(meta["schemaString"])
for f in s["fields"]:
    if f["name"] == "status": f["metadata"]["CURRENT_DEFAULT"] = "'unknown'"
    if f["name"] == "score": f["metadata"]["CURRENT_DEFAULT"] = "40 + 2"
meta["schemaString"] = json.dumps(s)
with open(f"{path}/_delta_log/00000000000000000001.json", "w") as out:
    out.write(json.dumps({"commitInfo": {"timestamp": 1, "operation": "ALTER TABLE"}}) + "\n")
    out.write(json.dumps({"protocol": {"minReaderVersion": 1, "minWriterVersion": 7, "writerFeatures": ["allowColumnDefaults"]}}) + "\n")
    out.write(json.dumps({"metaData": meta}) + "\n")
"#,
    );
    let a = csv(dir.path(), "a.csv", "id,region\n1,eu\n2,us\n");
    let b = csv(
        dir.path(),
        "b.csv",
        "id,region,status,score\n3,eu,,\n4,us,ok,7\n",
    );
    let c = csv(
        dir.path(),
        "c.jsonl",
        "{\"id\": 5, \"region\": \"eu\"}\n{\"id\": 6, \"region\": \"us\", \"status\": null, \"score\": null}\n",
    );
    // Through the queue, with a column the table lacks (added, then the rows typed again).
    let d = csv(dir.path(), "d.jsonl", "{\"id\": 7, \"note\": \"n\"}\n");
    for src in [&a, &b, &c] {
        ok(&sluice(
            &home,
            &["convert", src.to_str().unwrap(), "--table", "t"],
        ));
    }
    ok(&sluice(
        &home,
        &["run", d.to_str().unwrap(), "--table", "t"],
    ));
    let got = common::python(
        r#"
import os, sys, pyarrow as pa, deltalake
path = sys.argv[1]
con = duckdb_connect("delta")
print(con.execute(f"SELECT id, status, score, note FROM delta_scan('{path}') ORDER BY id").fetchall())
q = deltalake.QueryBuilder().register("t", deltalake.DeltaTable(path))
r = pa.table(q.execute("SELECT id, status, score, note FROM t ORDER BY id").read_all()).to_pylist()
print([tuple(x.values()) for x in r])
os._exit(0)
"#,
        &[table.to_str().unwrap()],
        "duckdb (delta extension) and deltalake",
    );
    let want = "[(1, 'unknown', 42, None), (2, 'unknown', 42, None), (3, None, None, None), (4, 'ok', 7, None), (5, 'unknown', 42, None), (6, None, None, None), (7, 'unknown', 42, 'n')]";
    agree(&got, want);
}

/// Identity columns (`identityColumns`, made by another engine: `id BIGINT GENERATED ALWAYS AS
/// IDENTITY (START WITH 100 INCREMENT BY 10)`): sluice gives every row a value, unique, on the
/// column's steps and above the log's high-water mark, which it raises before writing, through
/// `convert` and through the queue; a source that brings its own values is refused, naming the
/// column, and nothing of it lands. DuckDB and `deltalake` read it.
#[test]
fn identity_columns_get_unique_values_above_the_high_water_mark() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let table = home.join("lake/t");
    std::fs::create_dir_all(&table).unwrap();
    deltalake(
        &table,
        r#"
import json
schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
DeltaTable.create(path, schema=schema)
meta = [json.loads(l) for l in open(f"{path}/_delta_log/00000000000000000000.json") if "metaData" in l][0]["metaData"]
s = json.loads(meta["schemaString"])
s["fields"][0]["nullable"] = False
s["fields"][0]["metadata"] = {"delta.identity.start": 100, "delta.identity.step": 10, "delta.identity.allowExplicitInsert": False}
meta["schemaString"] = json.dumps(s)
with open(f"{path}/_delta_log/00000000000000000001.json", "w") as out:
    out.write(json.dumps({"commitInfo": {"timestamp": 1, "operation": "CREATE TABLE"}}) + "\n")
    out.write(json.dumps({"protocol": {"minReaderVersion": 1, "minWriterVersion": 7, "writerFeatures": ["identityColumns", "invariants"]}}) + "\n")
    out.write(json.dumps({"metaData": meta}) + "\n")
"#,
    );
    let names: String = (0..500).map(|i| format!("n{i}\n")).collect();
    let a = csv(dir.path(), "a.csv", &format!("name\n{names}"));
    let b = csv(
        dir.path(),
        "b.jsonl",
        &(0..300)
            .map(|i| format!("{{\"name\": \"j{i}\"}}\n"))
            .collect::<String>(),
    );
    ok(&sluice(
        &home,
        &["convert", a.to_str().unwrap(), "--table", "t"],
    ));
    ok(&sluice(
        &home,
        &["run", b.to_str().unwrap(), "--table", "t"],
    ));
    // Values a source brings are the table's to give: refused, nothing lands.
    let c = csv(dir.path(), "c.csv", "id,name\n1,x\n");
    let before = versions(&table);
    let out = sluice(&home, &["convert", c.to_str().unwrap(), "--table", "t"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("identity column id"),
        "{}",
        stderr(&out)
    );
    assert_eq!(versions(&table), before);
    let got = common::python(
        r#"
import os, sys, json, pyarrow as pa, deltalake
path = sys.argv[1]
con = duckdb_connect("delta")
d = con.execute(f"SELECT count(*), count(DISTINCT id), min(id), bool_and(id % 10 = 0) FROM delta_scan('{path}')").fetchone()
q = deltalake.QueryBuilder().register("t", deltalake.DeltaTable(path))
r = pa.table(q.execute("SELECT count(*) AS n, count(DISTINCT id) AS d, max(id) AS m FROM t").read_all()).to_pylist()[0]
f = json.loads(deltalake.DeltaTable(path).schema().to_json())["fields"][0]["metadata"]
print(*d, r["n"], r["d"], f["delta.identity.highWaterMark"] >= r["m"])
os._exit(0)
"#,
        &[table.to_str().unwrap()],
        "duckdb (delta extension) and deltalake",
    );
    assert_eq!(got, "800 800 100 True 800 800 True");
}

#[test]
fn a_table_an_earlier_sluice_made_is_adopted_by_another_home_with_its_spec() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    ok(&common::convert(
        &first,
        &common::sample(),
        "employment",
        "year(month)",
    ));
    let lake = first.join("lake");
    let table = lake.join("employment");
    // An earlier sluice did not record its spec in the table's properties.
    let v0 = table.join("_delta_log/00000000000000000000.json");
    let text = std::fs::read_to_string(&v0).unwrap();
    assert!(text.contains("sluice.partitionBy"), "{text}");
    let older: Vec<String> = text
        .lines()
        .map(|l| {
            let mut a: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(c) = a.pointer_mut("/metaData/configuration") {
                c.as_object_mut().unwrap().remove("sluice.partitionBy");
            }
            a.to_string()
        })
        .collect();
    std::fs::write(&v0, older.join("\n")).unwrap();
    // Another home on the same lake, its catalog empty: the spec given derives the table's
    // partition column (`year`), so it is taken, and the rows land in their years.
    let second = dir.path().join("second");
    let rows = csv(
        dir.path(),
        "2016.csv",
        &format!(
            "{}\n2016-01-01,{}\n",
            std::fs::read_to_string(common::sample())
                .unwrap()
                .lines()
                .next()
                .unwrap(),
            vec!["1"; 23].join(",")
        ),
    );
    ok(&sluice(
        &second,
        &[
            "--lake",
            lake.to_str().unwrap(),
            "convert",
            rows.to_str().unwrap(),
            "--table",
            "employment",
            "--partition-by",
            "year(month)",
        ],
    ));
    assert!(table.join("year=2016").is_dir());
    let (n, sum) = common::expected();
    agree(
        &readers(&table, "month", "nonfarm", true),
        &format!("{} {} {}", n + 1, n + 1, sum + 1),
    );
}

#[test]
fn check_constraints_of_another_writer_hold_for_the_rows_sluice_writes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let table = home.join("lake/weather");
    std::fs::create_dir_all(&table).unwrap();
    deltalake(
        &table,
        r#"
t = pa.table({"id": pa.array([1, 2], pa.int64()), "region": ["eu", "us"],
              "wind": pa.array([5, 7], pa.int64())})
write_deltalake(path, t, partition_by=["region"])
DeltaTable(path).alter.add_constraint({"wind_positive": "wind >= 0"})
DeltaTable(path).alter.add_constraint({"known_region": "region IN ('eu', 'us', 'ap')"})
"#,
    );
    // And a table whose `id` is NOT NULL (a pyarrow schema's non-nullable field).
    let strict = home.join("lake/strict");
    std::fs::create_dir_all(&strict).unwrap();
    deltalake(
        &strict,
        r#"
schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("region", pa.string())])
write_deltalake(path, pa.table({"id": [1], "region": ["eu"]}, schema=schema), partition_by=["region"])
"#,
    );
    let nulls = csv(dir.path(), "nulls.csv", "id,region\n2,eu\n,us\n");
    let out = sluice(
        &home,
        &["convert", nulls.to_str().unwrap(), "--table", "strict"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("break the constraint id NOT NULL"),
        "{}",
        stderr(&out)
    );
    let fine = csv(dir.path(), "fine.csv", "id,region\n2,eu\n3,us\n");
    ok(&sluice(
        &home,
        &["convert", fine.to_str().unwrap(), "--table", "strict"],
    ));
    agree(&three_readers(&strict, "id", "id"), "3 3 6");
    // Rows that keep the constraints land.
    let good = csv(dir.path(), "good.csv", "id,region,wind\n3,eu,0\n4,ap,12\n");
    ok(&sluice(
        &home,
        &["convert", good.to_str().unwrap(), "--table", "weather"],
    ));
    agree(&three_readers(&table, "id", "wind"), "4 4 24");
    // A file with a row that breaks one is refused whole, naming the constraint; nothing of
    // it is committed.
    let at = versions(&table);
    let bad = csv(
        dir.path(),
        "bad.csv",
        "id,region,wind\n5,eu,1\n6,us,-4\n7,us,2\n",
    );
    let out = sluice(
        &home,
        &["convert", bad.to_str().unwrap(), "--table", "weather"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("1 row(s)")
            && stderr(&out).contains("break the constraint wind_positive (wind >= 0)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(versions(&table), at);
    agree(&three_readers(&table, "id", "wind"), "4 4 24");
    // Through the queue: a message with a row of an unknown region is dead-lettered with the
    // reason, and never lands; a message of good rows lands.
    let unknown = csv(dir.path(), "bad2.csv", "id,region,wind\n8,mars,1\n");
    let good2 = csv(dir.path(), "good2.csv", "id,region,wind\n9,us,3\n");
    ok(&sluice(
        &home,
        &[
            "produce",
            unknown.to_str().unwrap(),
            good2.to_str().unwrap(),
            "--table",
            "weather",
        ],
    ));
    ok(&sluice(&home, &["consume", "--table", "weather", "--once"]));
    let stats = ok(&sluice(&home, &["queue", "stats", "--queue", "weather"]));
    assert!(
        stats.contains("dead-letter queue weather_dlq: 1 message(s)")
            && stats.contains("known_region"),
        "{stats}"
    );
    agree(&three_readers(&table, "id", "wind"), "5 5 27");
}

/// Files for `produce`: one row each, ids from `first`, two regions.
fn small_files(dir: &Path, first: usize, count: usize) -> Vec<String> {
    (first..first + count)
        .map(|i| {
            csv(
                dir,
                &format!("f{i:04}.csv"),
                &format!("id,region,v\n{i},{},{}\n", ["eu", "us"][i % 2], i * 10),
            )
            .to_string_lossy()
            .into_owned()
        })
        .collect()
}

#[test]
fn another_writer_appends_deletes_and_adds_columns_while_and_between_sluice_commits() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let table = home.join("lake/t");
    // sluice makes the table; 40 messages of one row wait in the queue.
    let files = small_files(dir.path(), 0, 40);
    let mut args = vec!["produce"];
    args.extend(files.iter().map(String::as_str));
    args.extend(["--table", "t", "--partition-by", "region"]);
    ok(&sluice(&home, &args));
    ok(&sluice(
        &home,
        &[
            "convert",
            csv(dir.path(), "seed.csv", "id,region,v\n1000,eu,5\n")
                .to_str()
                .unwrap(),
            "--table",
            "t",
        ],
    ));
    // `deltalake` appends 30 times, a tenth of a second apart, the last ten with a column the
    // table does not have yet; the consumer starts once its first commit is in and commits
    // message by message meanwhile.
    let sluice_versions = versions(&table);
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let writer = std::process::Command::new(python)
        .arg("-c")
        .arg(
            r#"
import os, sys, time, pyarrow as pa
from deltalake import write_deltalake
path = sys.argv[1]
for i in range(30):
    cols = {"id": pa.array([2000 + i], pa.int64()), "region": ["us"], "v": pa.array([1], pa.int64())}
    if i >= 20:
        cols["note"] = ["from deltalake"]
    write_deltalake(path, pa.table(cols), mode="append", schema_mode="merge" if i >= 20 else None)
    time.sleep(0.1)
sys.stdout.flush()
os._exit(0)
"#,
        )
        .arg(&table)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while versions(&table) == sluice_versions {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "deltalake did not commit"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let consumer = common::command(
        &home,
        &["consume", "--table", "t", "--once", "--rotate-rows", "1"],
    )
    .output()
    .unwrap();
    let w = writer.wait_with_output().unwrap();
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let out = consumer;
    ok(&out);
    // The two writers' commits interleaved: a sluice commit between deltalake's first and last.
    let order = common::writers_in_order(&table);
    let (first, last) = (order.find('D').unwrap(), order.rfind('D').unwrap());
    assert!(order[first..last].contains('S'), "no interleaving: {order}");
    let sum_sluice: i64 = (0..40).map(|i| i * 10).sum::<i64>() + 5;
    let want = format!("71 71 {}", sum_sluice + 30);
    agree(&three_readers(&table, "id", "v"), &want);
    // The same files again: every chunk part is recognised, nothing lands twice.
    ok(&sluice(&home, &args));
    let again = sluice(&home, &["consume", "--table", "t", "--once"]);
    ok(&again);
    assert!(
        stderr(&again).contains("40 duplicate(s) dropped"),
        "{}",
        stderr(&again)
    );
    // Another writer deletes rows (rewriting files), then sluice compacts everything that is
    // small, its files and the other writer's alike: the same rows, in fewer files.
    deltalake(&table, "DeltaTable(path).delete(\"id < 10\")");
    let sum_left = sum_sluice + 30 - (0..10).map(|i| i * 10).sum::<i64>();
    let want = format!("61 61 {sum_left}");
    agree(&three_readers(&table, "id", "v"), &want);
    let c = ok(&sluice(
        &home,
        &["compact", "--table", "t", "--target-size", "1MiB"],
    ));
    assert!(c.contains("compacted"), "{c}");
    agree(&three_readers(&table, "id", "v"), &want);
    let notes = deltalake(
        &table,
        "t = DeltaTable(path).to_pyarrow_table(); print(sum(1 for n in t['note'].to_pylist() if n == 'from deltalake'))",
    );
    assert_eq!(notes, "10");
}

/// A reference table copied into a fresh lake under `name`.
fn reference(lake: &Path, table: &str, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/delta-reference")
        .join(table);
    let dst = lake.join(name);
    for f in tree(&src) {
        let to = dst.join(&f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(&f), to).unwrap();
    }
    dst
}

#[test]
fn reference_tables_with_v2_checkpoints_are_appended_to_compacted_and_repaired() {
    for (reference_table, name) in [
        ("v2-json-sidecars-struct-stats-only", "v2json"),
        ("v2-parquet-sidecars-struct-stats-only", "v2parquet"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let table = reference(&home.join("lake"), reference_table, name);
        let before = readers(&table, "id", "id", false);
        let first: Vec<i64> = before
            .lines()
            .next()
            .unwrap()
            .split(' ')
            .map(|x| x.parse().unwrap())
            .collect();
        // Adopted as it is (unpartitioned), appended to: the log is read from its V2
        // checkpoint and sidecar.
        // The table is not partitioned: a partitioning asked for is refused, nothing written.
        let untouched = tree(&table);
        let rows = csv(dir.path(), "more.csv", "id,value\n1001,a\n1002,b\n1003,c\n");
        let bad = sluice(
            &home,
            &[
                "convert",
                rows.to_str().unwrap(),
                "--table",
                name,
                "--partition-by",
                "id",
            ],
        );
        assert!(!bad.status.success());
        assert!(
            stderr(&bad).contains("partitioned by nothing (unpartitioned)"),
            "{}",
            stderr(&bad)
        );
        assert_eq!(tree(&table), untouched);
        let versions_before = versions(&table);
        ok(&sluice(
            &home,
            &["convert", rows.to_str().unwrap(), "--table", name],
        ));
        // One version: the rows, the chunk parts' records and the source's, together.
        assert_eq!(versions(&table), versions_before + 1);
        let want = format!("{} {} {}", first[0] + 3, first[1] + 3, first[2] + 3006);
        agree(&readers(&table, "id", "id", false), &want);
        // Compaction and repair keep it readable with the same rows.
        ok(&sluice(
            &home,
            &["compact", "--table", name, "--target-size", "1MiB"],
        ));
        ok(&sluice(&home, &["repair", "--table", name, "--grace", "0"]));
        agree(&readers(&table, "id", "id", false), &want);
        // sluice wrote no checkpoint of its own: checkpoints of this table must be V2.
        assert!(
            !std::fs::read_dir(table.join("_delta_log"))
                .unwrap()
                .flatten()
                .any(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.contains(".checkpoint.parquet") && !n.starts_with("00000000000000000005")
                })
        );
    }
}

#[test]
fn reference_tables_with_integer_columns_and_deletion_vectors_are_appended_to() {
    // Databricks' deletion-vector table (one `integer` column, 10 rows of which a deletion
    // vector hides 2) and a multi-part checkpoint partitioned by an `integer` column: adopted,
    // appended to with the columns' own types, compacted and repaired.
    for (reference_table, name, rows, id, value, polars) in [
        (
            "table-with-dv-small",
            "dv",
            "value\n100\n101\n",
            "value",
            "value",
            true,
        ),
        (
            "v1-multi-part-partitioned-struct-stats-only",
            "multi",
            "id,value,part\n1001,a,1\n1002,b,7\n",
            "id",
            "part",
            false,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let table = reference(&home.join("lake"), reference_table, name);
        let before = readers(&table, id, value, polars);
        let first: Vec<i64> = before
            .lines()
            .next()
            .unwrap()
            .split(' ')
            .map(|x| x.parse().unwrap())
            .collect();
        let src = csv(dir.path(), "more.csv", rows);
        ok(&sluice(
            &home,
            &["convert", src.to_str().unwrap(), "--table", name],
        ));
        let added: i64 = if name == "dv" { 201 } else { 8 };
        let want = format!("{} {} {}", first[0] + 2, first[1] + 2, first[2] + added);
        agree(&readers(&table, id, value, polars), &want);
        // The column keeps its type in the log.
        let schema = ok(&sluice(&home, &["catalog", "schema", name]));
        assert!(schema.contains("int32"), "{schema}");
        ok(&sluice(
            &home,
            &["compact", "--table", name, "--target-size", "1MiB"],
        ));
        ok(&sluice(&home, &["repair", "--table", name, "--grace", "0"]));
        agree(&readers(&table, id, value, polars), &want);
        // The deletion vector still hides its rows: no file that has one was rewritten.
        if name == "dv" {
            assert!(
                table
                    .join("deletion_vector_61d16c75-6994-46b7-a15b-8b538852e50e.bin")
                    .exists()
            );
            assert!(
                table
                    .join("part-00000-fae5310a-a37d-4e51-827b-c3d5516560ca-c000.snappy.parquet")
                    .exists()
            );
        }
    }
}
