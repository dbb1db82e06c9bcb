//! Column types end to end: Parquet sources keep theirs, declared types are parsed exactly from
//! text, and what does not fit its type is quarantined with its text. Every table is read back
//! by DuckDB's Delta extension, Polars and the `deltalake` package and compared with the source
//! value by value.

mod common;

use std::path::Path;

use common::{ok, python, sluice};

/// Defines `compare(table_dir, source_parquet, types)`: reads the Delta table with DuckDB,
/// Polars and `deltalake`, sorted by `id`, and checks each column against the source file's
/// (cast to the type it must land as) value by value, and the Delta schema's type names.
const COMPARE: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.parquet as pq

def readers(path):
    from deltalake import DeltaTable
    import polars as pl
    con = duckdb_connect("delta")
    yield "duckdb", con.execute(f"SELECT * FROM delta_scan('{path}') ORDER BY id").to_arrow_table()
    yield "polars", pl.read_delta(path).sort("id").to_arrow()
    yield "deltalake", DeltaTable(path).to_pyarrow_table().sort_by("id")

def compare(path, want, delta_types):
    from deltalake import DeltaTable
    schema = json.loads(DeltaTable(path).schema().to_json())
    got_types = {f["name"]: f["type"] for f in schema["fields"]}
    for name, ty in delta_types.items():
        assert got_types.get(name) == ty, f"Delta type of {name}: {got_types.get(name)}, want {ty}"
    for reader, got in readers(path):
        assert got.num_rows == want.num_rows, f"{reader}: {got.num_rows} rows, want {want.num_rows}"
        for name in want.column_names:
            g = got.column(name).combine_chunks()
            w = want.column(name).combine_chunks()
            if g.type != w.type:
                g = g.cast(w.type)
            if not g.equals(w):
                for i in range(len(w)):
                    if g[i] != w[i]:
                        raise AssertionError(f"{reader}: {name} row {i}: {g[i]!r}, want {w[i]!r}")
        print(reader, "ok", flush=True)
"#;

fn compare(script: &str, args: &[&str]) -> String {
    python(
        &format!("{COMPARE}{script}\nimport os\nos._exit(0)\n"),
        args,
        "pyarrow, duckdb with its delta extension, polars and deltalake",
    )
}

fn table_dir(home: &Path, table: &str) -> String {
    home.join("lake").join(table).to_str().unwrap().to_string()
}

#[test]
fn parquet_columns_keep_their_types_and_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let src = dir.path().join("typed.parquet");
    // Integers of every width (unsigned ones too), float32, decimals of 12 and 38 digits,
    // bytes, dates and text, with NULLs.
    python(
        r#"
import sys, datetime, decimal
import pyarrow as pa, pyarrow.parquet as pq
n = 3000
r = range(n)
def nulls(xs, every):
    return [None if i % every == 0 else x for i, x in enumerate(xs)]
t = pa.table({
    "id": pa.array(range(1, n + 1), pa.int64()),
    "small": pa.array(nulls([(i % 256) - 128 for i in r], 11), pa.int8()),
    "mid": pa.array([(i * 37 % 65536) - 32768 for i in r], pa.int16()),
    "i32": pa.array([(i * 7919 % 2**32) - 2**31 for i in r], pa.int32()),
    "u8": pa.array([i % 256 for i in r], pa.uint8()),
    "u64": pa.array([2**64 - 1 - i * 977 for i in r], pa.uint64()),
    "f32": pa.array([i / 7 for i in r], pa.float32()),
    "price": pa.array(nulls([decimal.Decimal(i * 1234567 % 10**12).scaleb(-2) for i in r], 10), pa.decimal128(12, 2)),
    "big": pa.array([decimal.Decimal("1234567890123456789012.3456789012") * (i - 1500) for i in r], pa.decimal128(38, 10)),
    "blob": pa.array(nulls([bytes([i % 256, i * 3 % 256, 0, 255]) for i in r], 13), pa.binary()),
    "day": pa.array([datetime.date(2020, 1, 1) + datetime.timedelta(days=i % 900) for i in r], pa.date32()),
    "name": pa.array([f"n{i % 17}" for i in r], pa.string()),
})
pq.write_table(t, sys.argv[1], row_group_size=1000)
"#,
        &[src.to_str().unwrap()],
        "pyarrow",
    );
    ok(&sluice(
        &home,
        &[
            "convert",
            src.to_str().unwrap(),
            "--table",
            "typed",
            "--partition-by",
            "year(day)",
        ],
    ));
    let schema = ok(&sluice(&home, &["catalog", "schema", "typed"]));
    for (col, ty) in [
        ("small", "int8"),
        ("mid", "int16"),
        ("i32", "int32"),
        ("u8", "int16"),
        ("u64", "decimal(20,0)"),
        ("f32", "float32"),
        ("price", "decimal(12,2)"),
        ("big", "decimal(38,10)"),
        ("blob", "binary"),
    ] {
        assert!(
            schema
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [col, ty]),
            "{col} {ty}:\n{schema}"
        );
    }
    let got = compare(
        r#"
want = pq.read_table(sys.argv[2])
want = want.set_column(want.schema.get_field_index("u8"), "u8", want.column("u8").cast(pa.int16()))
want = want.set_column(want.schema.get_field_index("u64"), "u64", want.column("u64").cast(pa.decimal128(20, 0)))
compare(sys.argv[1], want, {
    "small": "byte", "mid": "short", "i32": "integer", "u8": "short", "u64": "decimal(20,0)",
    "f32": "float", "price": "decimal(12,2)", "big": "decimal(38,10)", "blob": "binary",
})
"#,
        &[&table_dir(&home, "typed"), src.to_str().unwrap()],
    );
    assert_eq!(got, "duckdb ok\npolars ok\ndeltalake ok");
    // sluice's own engine sums the decimals exactly too.
    let sums = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n, sum(price) AS price, sum(big) AS big, max(u64) AS top FROM typed",
            "--format",
            "csv",
        ],
    ));
    let want = python(
        r#"
import decimal, sys, pyarrow.parquet as pq
decimal.getcontext().prec = 60
t = pq.read_table(sys.argv[1]).to_pydict()
price = sum(x for x in t["price"] if x is not None)
print(f"n,price,big,top\n{len(t['id'])},{price},{sum(t['big'])},{max(t['u64'])}")
"#,
        &[src.to_str().unwrap()],
        "pyarrow",
    );
    assert_eq!(sums.trim(), want);
}

#[test]
fn declared_types_parse_text_exactly_and_misfits_keep_their_text_in_the_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let csv = dir.path().join("orders.csv");
    let mut text = String::from("id,qty,price,ratio,payload,flag\n");
    for i in 1..=2000u32 {
        text.push_str(&format!(
            "{i},{},{}.{:02},{},\\x{:02x}{:02x},{}\n",
            i % 30_000,
            i * 7919 % 1_000_000,
            i % 100,
            f64::from(i) / 8.0,
            i % 256,
            i * 7 % 256,
            i % 2 == 0,
        ));
    }
    // Misfits: each quarantined with its text, the row's line and why.
    let bad = [
        (
            "2001,40000,1.00,1,00,true",
            "\"qty\": cannot parse \"40000\" as int16 (it is out of the range -32768 to 32767)",
        ),
        (
            "2002,1,1.005,1,00,true",
            "\"price\": cannot parse \"1.005\" as decimal(12,2): it has more digits after the point than the scale",
        ),
        (
            "2003,1,12345678901.00,1,00,true",
            "\"price\": cannot parse \"12345678901.00\" as decimal(12,2): it has more digits before the point than the precision leaves",
        ),
        (
            "2004,1,1.00,1,xyz,true",
            "\"payload\": cannot parse \"xyz\" as binary",
        ),
        (
            "2005,1,1.00,1e40,00,true",
            "\"ratio\": cannot parse \"1e40\" as float32",
        ),
    ];
    for (row, _) in bad {
        text.push_str(row);
        text.push('\n');
    }
    std::fs::write(&csv, &text).unwrap();
    std::fs::write(
        dir.path().join("sluice.toml"),
        "[tables.orders]\ncolumns = { id = \"bigint\", qty = \"smallint\", price = \"decimal(12,2)\", ratio = \"float\", payload = \"bytea\", flag = \"boolean\" }\n",
    )
    .unwrap();
    let out = sluice(
        &home,
        &["convert", csv.to_str().unwrap(), "--table", "orders"],
    );
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(2000 written, 5 quarantined"), "{err}");
    let q = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT line, raw, reason FROM quarantine ORDER BY line",
            "--format",
            "json",
        ],
    ));
    let q: Vec<serde_json::Value> = q
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(q.len(), bad.len(), "{q:?}");
    for (k, (row, why)) in bad.iter().enumerate() {
        assert_eq!(q[k]["line"], 2002 + k as u64, "{q:?}");
        assert_eq!(q[k]["raw"], *row, "{q:?}");
        let reason = q[k]["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{reason} does not say {why}");
    }
    // The rows taken, read by three readers: exactly the CSV's values.
    let got = compare(
        r#"
import csv, decimal
rows = [r for r in csv.DictReader(open(sys.argv[2])) if int(r["id"]) <= 2000]
want = pa.table({
    "id": pa.array([int(r["id"]) for r in rows], pa.int64()),
    "qty": pa.array([int(r["qty"]) for r in rows], pa.int16()),
    "price": pa.array([decimal.Decimal(r["price"]) for r in rows], pa.decimal128(12, 2)),
    "ratio": pa.array([float(r["ratio"]) for r in rows], pa.float64()).cast(pa.float32(), safe=False),
    "payload": pa.array([bytes.fromhex(r["payload"][2:]) for r in rows], pa.binary()),
    "flag": pa.array([r["flag"] == "true" for r in rows], pa.bool_()),
})
compare(sys.argv[1], want, {"qty": "short", "price": "decimal(12,2)", "ratio": "float", "payload": "binary"})
"#,
        &[&table_dir(&home, "orders"), csv.to_str().unwrap()],
    );
    assert_eq!(got, "duckdb ok\npolars ok\ndeltalake ok");
}

#[test]
fn exact_decimals_are_inferred_from_text_and_kept_for_added_columns() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.jsonl");
    // Prices whose float sum is not their decimal sum.
    let mut text = String::from("id,price\n");
    for i in 1..=1000 {
        text.push_str(&format!("{i},0.{:02}\n", i % 100));
    }
    std::fs::write(&a, text).unwrap();
    // A later source adds a column; JSON numbers keep their digits (20 of them here).
    let mut text = String::new();
    for i in 1001..=1100 {
        text.push_str(&format!(
            "{{\"id\": {i}, \"price\": 0.10, \"tax\": 123456789012345.{i:05}}}\n"
        ));
    }
    std::fs::write(&b, text).unwrap();
    for src in [&a, &b] {
        ok(&sluice(
            &home,
            &[
                "convert",
                src.to_str().unwrap(),
                "--table",
                "prices",
                "--exact-decimals",
            ],
        ));
    }
    let schema = ok(&sluice(&home, &["catalog", "schema", "prices"]));
    assert!(
        schema.contains("price                            decimal(18,2)"),
        "{schema}"
    );
    assert!(
        schema.contains("tax                              decimal(38,5)"),
        "{schema}"
    );
    let sums = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT sum(price) AS price, sum(tax) AS tax, count(tax) AS n FROM prices",
            "--format",
            "csv",
        ],
    ));
    // 10 × (0.01 + … + 0.99) + 100 × 0.10; 100 × 123456789012345 + (0.01001 + … + 0.01100).
    assert_eq!(sums, "price,tax,n\n505.00,12345678901234501.05050,100\n");
    let got = compare(
        r#"
import decimal
D = decimal.Decimal
want = pa.table({
    "id": pa.array(range(1, 1101), pa.int64()),
    "price": pa.array([D(f"0.{i % 100:02}") for i in range(1, 1001)] + [D("0.10")] * 100, pa.decimal128(18, 2)),
    "tax": pa.array([None] * 1000 + [D(f"123456789012345.{i:05}") for i in range(1001, 1101)], pa.decimal128(38, 5)),
})
compare(sys.argv[1], want, {"price": "decimal(18,2)", "tax": "decimal(38,5)"})
"#,
        &[&table_dir(&home, "prices")],
    );
    assert_eq!(got, "duckdb ok\npolars ok\ndeltalake ok");
    // Without the option the same text is a double, as DuckDB and Polars infer it.
    ok(&sluice(
        &home,
        &["convert", a.to_str().unwrap(), "--table", "floats"],
    ));
    let schema = ok(&sluice(&home, &["catalog", "schema", "floats"]));
    assert!(
        schema.contains("price                            float64"),
        "{schema}"
    );
}

/// Column names as they come (`Unit Price ($)`, `Order Date`, camelCase) become snake_case, the
/// same from CSV, JSON lines and Parquet, through `convert` and through the queue; the name as
/// it came is in the column's Delta metadata; `--column-names as-is` keeps them; names that
/// would clash are refused, naming both.
#[test]
fn column_names_as_they_come_are_snake_case_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let csv = dir.path().join("a.csv");
    std::fs::write(
        &csv,
        "Order ID,Order Date,Unit Price ($),qtyOrdered\n1,2024-01-02,3.50,2\n2,2025-02-03,4.25,1\n",
    )
    .unwrap();
    let jsonl = dir.path().join("b.jsonl");
    std::fs::write(
        &jsonl,
        "{\"Order ID\": 3, \"Order Date\": \"2025-03-04\", \"Unit Price ($)\": 1.25, \"qtyOrdered\": 5, \"Gift Note\": \"hi\"}\n",
    )
    .unwrap();
    let pq = dir.path().join("c.parquet");
    python(
        r#"
import sys, datetime, pyarrow as pa, pyarrow.parquet as pq
pq.write_table(pa.table({"Order ID": [4], "Order Date": [datetime.date(2024, 5, 6)], "Unit Price ($)": [2.0], "qtyOrdered": [7]}), sys.argv[1])
"#,
        &[pq.to_str().unwrap()],
        "pyarrow",
    );
    ok(&sluice(
        &home,
        &[
            "convert",
            csv.to_str().unwrap(),
            "--table",
            "orders",
            "--partition-by",
            "year(Order Date)",
        ],
    ));
    // Later sources name the partitioning as they name the column, or not at all.
    ok(&sluice(
        &home,
        &[
            "convert",
            jsonl.to_str().unwrap(),
            "--table",
            "orders",
            "--partition-by",
            "year(order_date)",
        ],
    ));
    ok(&sluice(
        &home,
        &["produce", pq.to_str().unwrap(), "--table", "orders"],
    ));
    ok(&sluice(&home, &["consume", "--table", "orders", "--once"]));
    let schema = ok(&sluice(&home, &["catalog", "schema", "orders"]));
    for line in [
        "order_id                         int64 (from \"Order ID\")",
        "unit_price                       float64 (from \"Unit Price ($)\")",
        "qty_ordered                      int64 (from \"qtyOrdered\")",
        // Added by schema evolution from the JSON source, with its name as written too.
        "gift_note                        string (from \"Gift Note\")",
        "column names: snake_case",
    ] {
        assert!(schema.contains(line), "{line}:\n{schema}");
    }
    let got = python(
        r#"
import json, sys, polars as pl
from deltalake import DeltaTable
path = sys.argv[1]
fields = json.loads(DeltaTable(path).schema().to_json())["fields"]
print(*[f"{f['name']}={f['metadata'].get('sluice.sourceName', '')}" for f in fields])
con = duckdb_connect("delta")
print(*con.execute(f"SELECT count(*), sum(order_id), sum(unit_price * qty_ordered), min(order_date) FROM delta_scan('{path}')").fetchone())
print(*pl.read_delta(path).select(pl.len(), pl.col("order_id").sum(), (pl.col("unit_price") * pl.col("qty_ordered")).sum()).row(0))
"#,
        &[home.join("lake/orders").to_str().unwrap()],
        "duckdb, polars and deltalake",
    );
    assert_eq!(
        got,
        "order_id=Order ID order_date=Order Date unit_price=Unit Price ($) qty_ordered=qtyOrdered gift_note=Gift Note year=\n\
         4 10 31.5 2024-01-02\n\
         4 10 31.5"
    );
    // As they come, when asked: DuckDB reads them so.
    ok(&sluice(
        &home,
        &[
            "convert",
            csv.to_str().unwrap(),
            "--table",
            "raw",
            "--column-names",
            "as-is",
        ],
    ));
    let schema = ok(&sluice(&home, &["catalog", "schema", "raw"]));
    assert!(
        schema.contains("  Unit Price ($)") && schema.contains("column names: as-is"),
        "{schema}"
    );
    assert_eq!(
        common::duckdb_count(&home.join("lake/raw"), "\"Order ID\""),
        (2, 2)
    );
    // Two names the rule makes alike: refused, both named, nothing written.
    let clash = dir.path().join("clash.csv");
    std::fs::write(&clash, "Order ID,order_id\n1,2\n").unwrap();
    let out = sluice(
        &home,
        &["convert", clash.to_str().unwrap(), "--table", "clash"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"Order ID\" and \"order_id\" would both be \"order_id\""),
        "{err}"
    );
    // And into an existing table: the source is refused with the header named.
    let clash2 = dir.path().join("clash2.csv");
    std::fs::write(&clash2, "Order ID,order id,Order Date\n9,9,2024-01-01\n").unwrap();
    let out = sluice(
        &home,
        &["convert", clash2.to_str().unwrap(), "--table", "orders"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("columns \"Order ID\" and \"order id\" of the header are both \"order_id\""),
        "{err}"
    );
}

/// Parquet as DuckDB writes it (decimals in INT32 and INT64, and a 38-digit one in fixed-length
/// bytes) and as Spark writes it (INT96 timestamps, `_SUCCESS` and `.crc` files beside the
/// parts): every value lands exactly, as DuckDB reads the sources themselves.
#[test]
fn parquet_from_duckdb_and_spark_lands_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    python(
        r#"
import sys, os, datetime
import pyarrow as pa, pyarrow.parquet as pq
d = sys.argv[1]
con = duckdb_connect()
con.execute(f"""COPY (SELECT i::BIGINT AS id, (i * 1.25)::DECIMAL(9,2) AS small,
    (i * 12345.678)::DECIMAL(18,3) AS mid, (i * 100000000000000000000 + 0.5)::DECIMAL(38,1) AS big,
    TIMESTAMP '2024-01-01 00:00:00' + i * INTERVAL 1 MINUTE AS ts
    FROM range(1, 2001) t(i)) TO '{d}/part-00000-duckdb.parquet' (FORMAT parquet)""")
# parquet-mr's forms: INT96 timestamps, and the files Spark leaves beside its parts.
t = pa.table({
    "id": pa.array(range(2001, 3001), pa.int64()),
    "small": pa.array([None] * 1000, pa.decimal128(9, 2)),
    "ts": pa.array([datetime.datetime(2023, 5, 1, 12, 0, 0, 123456) + datetime.timedelta(seconds=i) for i in range(1000)], pa.timestamp("us")),
})
pq.write_table(t, f"{d}/part-00001-spark.snappy.parquet", use_deprecated_int96_timestamps=True)
open(f"{d}/_SUCCESS", "w").close()
open(f"{d}/.part-00001-spark.snappy.parquet.crc", "wb").write(b"crc")
"#,
        &[data.to_str().unwrap()],
        "duckdb and pyarrow",
    );
    ok(&sluice(
        &home,
        &["convert", data.to_str().unwrap(), "--table", "mixed"],
    ));
    let schema = ok(&sluice(&home, &["catalog", "schema", "mixed"]));
    for line in [
        "small                            decimal(9,2)",
        "mid                              decimal(18,3)",
        "big                              decimal(38,1)",
    ] {
        assert!(schema.contains(line), "{line}:\n{schema}");
    }
    let got = python(
        r#"
import sys
con = duckdb_connect("delta")
q = "SELECT count(*), count(DISTINCT id), sum(small)::VARCHAR, sum(mid)::VARCHAR, sum(big)::VARCHAR, min(ts)::VARCHAR, max(ts)::VARCHAR FROM {}"
a = con.execute(q.format(f"read_parquet('{sys.argv[1]}/*.parquet', union_by_name = true)")).fetchone()
b = con.execute(q.format(f"delta_scan('{sys.argv[2]}')")).fetchone()
print(a)
print(b)
"#,
        &[
            data.to_str().unwrap(),
            home.join("lake/mixed").to_str().unwrap(),
        ],
        "duckdb with its delta extension",
    );
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 2, "{got}");
    assert_eq!(lines[0], lines[1], "the sources and the table differ");
    assert!(lines[0].starts_with("(3000, 3000, '2501250.00'"), "{got}");
}

/// JSON lines with objects and arrays: `user` becomes a struct (with a struct inside), `tags` a
/// list, through `convert` and through the queue (`run`); DuckDB, Polars, `deltalake` and
/// `sluice query` read `user.id`, `user.address.city` and `len(tags)` as fields; a value of
/// another shape is quarantined with the reason.
#[test]
fn json_objects_and_arrays_land_as_structs_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let src = dir.path().join("events.jsonl");
    let mut text = String::new();
    for i in 1..=3000u64 {
        let user = if i % 17 == 0 {
            "null".to_string()
        } else if i % 2 == 0 {
            // Keys in another order, a NULL inside.
            format!(
                r#"{{"address": {{"zip": null, "city": "c{}"}}, "id": {}, "Full Name": "u{}"}}"#,
                i % 5,
                i * 7,
                i % 50
            )
        } else {
            format!(
                r#"{{"id": {}, "Full Name": "u{}", "address": {{"city": "c{}", "zip": "0{}"}}}}"#,
                i * 7,
                i % 50,
                i % 5,
                i % 9
            )
        };
        let tags: Vec<String> = (0..i % 4)
            .map(|k| format!("\"t{}\"", (i + k) % 6))
            .collect();
        let tags = if i % 23 == 0 {
            "null".to_string()
        } else {
            format!("[{}]", tags.join(", "))
        };
        text.push_str(&format!(
            r#"{{"id": {i}, "user": {user}, "tags": {tags}, "amount": {}.{:02}}}"#,
            i % 1000,
            i % 100
        ));
        text.push('\n');
    }
    std::fs::write(&src, &text).unwrap();
    let more = dir.path().join("more.jsonl");
    std::fs::write(
        &more,
        concat!(
            r#"{"id": 3001, "user": [1, 2], "tags": ["a"], "amount": 1.5}"#,
            "\n",
            r#"{"id": 3002, "user": {"id": "seven"}, "tags": ["a"], "amount": 1.5}"#,
            "\n",
            r#"{"id": 3003, "user": {"id": 1}, "tags": "a", "amount": 1.5}"#,
            "\n",
        ),
    )
    .unwrap();
    ok(&sluice(
        &home,
        &["convert", src.to_str().unwrap(), "--table", "events"],
    ));
    let out = sluice(
        &home,
        &["convert", more.to_str().unwrap(), "--table", "events"],
    );
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(0 written, 3 quarantined"), "{err}");
    ok(&sluice(
        &home,
        &["run", src.to_str().unwrap(), "--table", "queued"],
    ));
    let schema = ok(&sluice(&home, &["catalog", "schema", "events"]));
    for line in [
        "user                             struct<id:int64,full_name:string,address:struct<city:string,zip:string>>",
        "tags                             array<string>",
    ] {
        assert!(schema.contains(line), "{line}:\n{schema}");
    }
    let q = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT line, reason FROM quarantine ORDER BY line",
            "--format",
            "json",
        ],
    ));
    let reasons: Vec<String> = q
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"].to_string())
        .collect();
    assert_eq!(reasons.len(), 3, "{q}");
    for (reason, why) in reasons.iter().zip([
        r#"([1, 2] is not a JSON object)"#,
        r#"(field \"id\": cannot parse \"seven\" as int64)"#,
        r#"(\"a\" is not a JSON array)"#,
    ]) {
        assert!(reason.contains(why), "{reason} does not say {why}");
    }
    for table in ["events", "queued"] {
        let got = compare(
            r#"
want_rows = [json.loads(l) for l in open(sys.argv[2])]
def user(u):
    if u is None:
        return None
    return {"id": u["id"], "full_name": u["Full Name"], "address": u["address"]}
address = pa.struct([("city", pa.string()), ("zip", pa.string())])
want = pa.table({
    "id": pa.array([r["id"] for r in want_rows], pa.int64()),
    "user": pa.array([user(r["user"]) for r in want_rows], pa.struct([("id", pa.int64()), ("full_name", pa.string()), ("address", address)])),
    "tags": pa.array([r["tags"] for r in want_rows], pa.list_(pa.string())),
})
compare(sys.argv[1], want, {"tags": {"type": "array", "elementType": "string", "containsNull": True}})
# Fields and lengths, as each reader asks for them.
ids = sum(r["user"]["id"] for r in want_rows if r["user"])
tags = sum(len(r["tags"]) for r in want_rows if r["tags"])
c1 = sum(1 for r in want_rows if r["user"] and r["user"]["address"]["city"] == "c1")
con = duckdb_connect("delta")
got = con.execute(f"SELECT sum(\"user\".id), sum(len(tags)), count(*) FILTER (WHERE \"user\".address.city = 'c1') FROM delta_scan('{sys.argv[1]}')").fetchone()
assert got == (ids, tags, c1), (got, ids, tags, c1)
import polars as pl
df = pl.read_delta(sys.argv[1])
got = (df["user"].struct.field("id").sum(), df["tags"].list.len().sum())
assert got == (ids, tags), got
# The log's statistics reach inside the struct, as deltalake reads them (lists have none).
from deltalake import DeltaTable
acts = pa.table(DeltaTable(sys.argv[1]).get_add_actions(flatten=True)).to_pydict()
uids = [r["user"]["id"] for r in want_rows if r["user"]]
got = (min(acts["min.user.id"]), max(acts["max.user.id"]), sum(acts["null_count.user.id"]))
assert got == (min(uids), max(uids), len(want_rows) - len(uids)), got
assert not any(k.startswith("min.tags") for k in acts), list(acts)
print(ids, tags, c1)
"#,
            &[&table_dir(&home, table), src.to_str().unwrap()],
        );
        let mut lines = got.lines();
        assert_eq!(
            lines.by_ref().take(3).collect::<Vec<_>>(),
            ["duckdb ok", "polars ok", "deltalake ok"]
        );
        let figures = lines.next().unwrap().to_string();
        let ours = ok(&sluice(
            &home,
            &[
                "query",
                &format!(
                    "SELECT sum(\"user\".id) || ' ' || sum(cardinality(tags)) || ' ' || count(*) FILTER (WHERE \"user\".address.city = 'c1') AS f FROM {table}"
                ),
                "--format",
                "json",
            ],
        ));
        assert_eq!(
            ours.trim(),
            format!("{{\"f\":\"{figures}\"}}"),
            "sluice query on {table}"
        );
    }
}

/// Parquet structs, lists and maps keep their shape and every value: decimals and timestamps
/// inside structs, maps with integer keys and NULL values, lists of lists (large and of
/// unsigned integers, which land one size up), lists of bytes.
#[test]
fn parquet_structs_lists_and_maps_keep_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let src = dir.path().join("nested.parquet");
    python(
        r#"
import sys, decimal, datetime
import pyarrow as pa, pyarrow.parquet as pq
n = 2000
def every(k, xs):
    return [None if i % k == 0 else x for i, x in enumerate(xs)]
r = range(n)
t = pa.table({
    "id": pa.array(range(1, n + 1), pa.int64()),
    "s": pa.array(every(13, [{"a": i % 7 if i % 5 else None, "price": decimal.Decimal(i * 7919 % 10**9).scaleb(-2),
                              "at": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=i),
                              "c": list(range(i % 3))} for i in r]),
                  pa.struct([("a", pa.int32()), ("price", pa.decimal128(12, 2)), ("at", pa.timestamp("us", tz="UTC")), ("c", pa.list_(pa.int16()))])),
    "m": pa.array(every(11, [[(f"k{j}", None if (i + j) % 4 == 0 else i / 8 + j) for j in range(i % 3)] for i in r]), pa.map_(pa.string(), pa.float64())),
    "mi": pa.array(every(9, [[(j * 1000 + i % 10, f"v{i}") for j in range(i % 2 + 1)] for i in r]), pa.map_(pa.int32(), pa.string())),
    "ll": pa.array(every(7, [[[i % 256], [j % 256 for j in range(i % 4)]] for i in r]), pa.large_list(pa.list_(pa.uint8()))),
    "bn": pa.array(every(5, [[bytes([i % 256, 0, 255]), None] for i in r]), pa.list_(pa.binary())),
})
pq.write_table(t, sys.argv[1], row_group_size=700)
"#,
        &[src.to_str().unwrap()],
        "pyarrow",
    );
    ok(&sluice(
        &home,
        &["convert", src.to_str().unwrap(), "--table", "nested"],
    ));
    let schema = ok(&sluice(&home, &["catalog", "schema", "nested"]));
    for (col, ty) in [
        (
            "s",
            "struct<a:int32,price:decimal(12,2),at:timestamp_tz,c:array<int16>>",
        ),
        ("m", "map<string,float64>"),
        ("mi", "map<int32,string>"),
        ("ll", "array<array<int16>>"),
        ("bn", "array<binary>"),
    ] {
        assert!(
            schema
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [col, ty]),
            "{col} {ty}:\n{schema}"
        );
    }
    let got = compare(
        r#"
want = pq.read_table(sys.argv[2])
ll = pa.list_(pa.list_(pa.int16()))
want = want.set_column(want.schema.get_field_index("ll"), "ll", want.column("ll").cast(ll))
compare(sys.argv[1], want, {
    "mi": {"type": "map", "keyType": "integer", "valueType": "string", "valueContainsNull": True},
    "ll": {"type": "array", "elementType": {"type": "array", "elementType": "short", "containsNull": True}, "containsNull": True},
})
con = duckdb_connect("delta")
src = pq.read_table(sys.argv[2]).to_pylist()
want = (sum(r["s"]["price"] for r in src if r["s"]), sum(1 for r in src if r["mi"] and 1000 + (r["id"] - 1) % 10 in dict(r["mi"])))
got = con.execute(f"SELECT sum(s.price), count(*) FILTER (WHERE mi[1000 + (id - 1) % 10] IS NOT NULL) FROM delta_scan('{sys.argv[1]}')").fetchone()
assert got == want, (got, want)
print(got[0])
print(sum(dict(r["m"]).get("k1") or 0 for r in src if r["m"]))
"#,
        &[&table_dir(&home, "nested"), src.to_str().unwrap()],
    );
    let mut lines = got.lines();
    assert_eq!(
        lines.by_ref().take(3).collect::<Vec<_>>(),
        ["duckdb ok", "polars ok", "deltalake ok"]
    );
    // The decimal sum inside the struct, exact in sluice's own engine too.
    let sum = lines.next().unwrap();
    let ours = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT CAST(sum(s.price) AS VARCHAR) AS p FROM nested",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(ours.lines().nth(1), Some(sum), "{ours}");
    // A map looked up by key in sluice's engine (values are eighths: sums are exact).
    let k1: f64 = lines.next().unwrap().parse().unwrap();
    let ours = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT sum(m['k1']) AS k FROM nested",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(
        ours.lines().nth(1).map(|l| l.parse::<f64>().unwrap()),
        Some(k1),
        "{ours}"
    );
}

/// Nested types declared in sluice.toml read CSV cells as JSON, through `convert` and through
/// the queue; a map is looked up by key, a cell that does not fit is quarantined with its text.
#[test]
fn declared_nested_columns_read_json_cells_from_csv() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let csv = dir.path().join("points.csv");
    let mut text = String::from("id,point,attrs,tags\n");
    for i in 1..=1500u32 {
        text.push_str(&format!(
            "{i},\"{{\"\"x\"\": {}.5, \"\"y\"\": -{}}}\",\"{{\"\"a\"\": {}, \"\"b\"\": null}}\",\"[\"\"t{}\"\", \"\"u\"\"]\"\n",
            i % 100,
            i % 7,
            i * 3,
            i % 4
        ));
    }
    text.push_str("1501,\"{\"\"x\"\": \"\"east\"\"}\",{},[]\n");
    std::fs::write(&csv, &text).unwrap();
    std::fs::write(
        dir.path().join("sluice.toml"),
        "[tables.points]\ncolumns = { id = \"bigint\", point = \"struct<x:double,y:decimal(4,0)>\", attrs = \"map<string,int>\", tags = \"array<string>\" }\n\
         [tables.queued]\ncolumns = { id = \"bigint\", point = \"struct<x:double,y:decimal(4,0)>\", attrs = \"map<string,int>\", tags = \"array<string>\" }\n",
    )
    .unwrap();
    let out = sluice(
        &home,
        &["convert", csv.to_str().unwrap(), "--table", "points"],
    );
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(1500 written, 1 quarantined"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&sluice(
        &home,
        &["run", csv.to_str().unwrap(), "--table", "queued"],
    ));
    let q = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT line, reason FROM quarantine",
            "--format",
            "csv",
        ],
    ));
    assert!(
        q.contains(r#"(field \"x\": cannot parse \"east\" as float64)"#)
            || q.contains(r#"(field ""x"": cannot parse ""east"" as float64)"#),
        "{q}"
    );
    for table in ["points", "queued"] {
        let got = python(
            r#"
import sys
con = duckdb_connect("delta")
print(con.execute(f"SELECT count(*), sum(point.x), sum(point.y), sum(attrs['a']), count(attrs['b']), sum(len(tags)) FROM delta_scan('{sys.argv[1]}')").fetchone())
import os
os._exit(0)
"#,
            &[&table_dir(&home, table)],
            "duckdb with its delta extension",
        );
        let want = (1..=1500u32).fold((0f64, 0i64, 0i64), |(x, y, a), i| {
            (
                x + f64::from(i % 100) + 0.5,
                y - i64::from(i % 7),
                a + i64::from(i * 3),
            )
        });
        assert_eq!(
            got.trim(),
            format!(
                "(1500, {:?}, Decimal('{}'), {}, 0, 3000)",
                want.0, want.1, want.2
            ),
            "{table}"
        );
    }
}

/// Schema evolution by name reaches inside structs: fields a struct lacks are added (at any
/// depth) through `convert` and through the queue, files written before read them as NULL in
/// every reader, compaction keeps every value; `freeze` quarantines such rows with the reason and
/// `discard-columns` drops the fields.
#[test]
fn struct_fields_are_added_by_schema_evolution_as_the_policy_says() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let write = |name: &str, from: u64, to: u64, user: &dyn Fn(u64) -> String| {
        let path = dir.path().join(name);
        let text: String = (from..=to)
            .map(|i| format!("{{\"id\": {i}, \"user\": {}}}\n", user(i)))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    let first = write("first.jsonl", 1, 1000, &|i| {
        format!(r#"{{"id": {i}, "name": "n{}"}}"#, i % 10)
    });
    let second = write("second.jsonl", 1001, 2000, &|i| {
        format!(
            r#"{{"id": {i}, "nick": "k{}", "address": {{"city": "c{}"}}}}"#,
            i % 3,
            i % 5
        )
    });
    let third = write("third.jsonl", 2001, 3000, &|i| {
        format!(
            r#"{{"id": {i}, "address": {{"city": "c1", "zip": {i}}}, "age": {}}}"#,
            i % 90
        )
    });
    ok(&sluice(
        &home,
        &["convert", first.to_str().unwrap(), "--table", "events"],
    ));
    ok(&sluice(
        &home,
        &["convert", second.to_str().unwrap(), "--table", "events"],
    ));
    ok(&sluice(
        &home,
        &["run", third.to_str().unwrap(), "--table", "events"],
    ));
    let schema = ok(&sluice(&home, &["catalog", "schema", "events"]));
    let want =
        "struct<id:int64,name:string,nick:string,address:struct<city:string,zip:int64>,age:int64>";
    assert!(
        schema
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["user", want]),
        "{schema}"
    );
    assert_eq!(
        schema.matches("struct fields added: user struct<").count(),
        2,
        "{schema}"
    );
    let figures = |stage: &str| {
        let got = python(
            r#"
import sys, json
from deltalake import DeltaTable
import polars as pl
path = sys.argv[1]
con = duckdb_connect("delta")
d = con.execute(f"SELECT count(*), count(\"user\".name), count(\"user\".nick), count(\"user\".address.city), sum(\"user\".address.zip), sum(\"user\".age), sum(\"user\".id) FROM delta_scan('{path}')").fetchone()
df = pl.read_delta(path)
u = df["user"]
p = (df.height, u.struct.field("name").count(), u.struct.field("nick").count(), u.struct.field("address").struct.field("city").count(), u.struct.field("address").struct.field("zip").sum(), u.struct.field("age").sum(), u.struct.field("id").sum())
t = DeltaTable(path).to_pyarrow_table().to_pylist()
def n(k):
    return sum(1 for r in t if r["user"][k] is not None)
z = (len(t), n("name"), n("nick"), sum(1 for r in t if r["user"]["address"] and r["user"]["address"]["city"] is not None),
     sum(r["user"]["address"]["zip"] or 0 for r in t if r["user"]["address"]), sum(r["user"]["age"] or 0 for r in t), sum(r["user"]["id"] for r in t))
assert tuple(d) == p == z, (d, p, z)
print(json.dumps(list(d)))
import os
os._exit(0)
"#,
            &[&table_dir(&home, "events")],
            "duckdb with its delta extension, polars and deltalake",
        );
        assert_eq!(
            got.trim(),
            format!(
                "[3000, 1000, 1000, 2000, {}, {}, {}]",
                (2001..=3000u64).sum::<u64>(),
                (2001..=3000u64).map(|i| i % 90).sum::<u64>(),
                (1..=3000u64).sum::<u64>()
            ),
            "{stage}"
        );
    };
    figures("after evolution");
    ok(&sluice(&home, &["compact", "--table", "events"]));
    figures("after compaction");

    // Under freeze the rows are quarantined, naming the field; under discard-columns the
    // fields are dropped and the rows land.
    for (table, policy) in [("frozen", "freeze"), ("dropped", "discard-columns")] {
        ok(&sluice(
            &home,
            &[
                "convert",
                first.to_str().unwrap(),
                "--table",
                table,
                "--schema-policy",
                policy,
            ],
        ));
        let out = sluice(
            &home,
            &["convert", second.to_str().unwrap(), "--table", table],
        );
        ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        let schema = ok(&sluice(&home, &["catalog", "schema", table]));
        assert!(schema.contains("struct<id:int64,name:string>"), "{schema}");
        if policy == "freeze" {
            assert!(err.contains("(0 written, 1000 quarantined"), "{err}");
            let q = ok(&sluice(
                &home,
                &[
                    "query",
                    "SELECT reason FROM quarantine WHERE line = 1 AND source LIKE '%second.jsonl'",
                    "--format",
                    "csv",
                ],
            ));
            assert!(
                q.contains("field \"\"nick\"\" is not one of the struct's"),
                "{q}"
            );
        } else {
            assert!(err.contains("(1000 written, 0 quarantined"), "{err}");
            let n = ok(&sluice(
                &home,
                &[
                    "query",
                    "SELECT count(*) AS n FROM dropped WHERE \"user\".id > 1000",
                    "--format",
                    "csv",
                ],
            ));
            assert_eq!(n.trim(), "n\n1000");
        }
    }
}
