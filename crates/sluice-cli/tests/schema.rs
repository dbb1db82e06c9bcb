//! Schema evolution through the `sluice` binary: sources matched to the table by column name,
//! new columns added (evolve), refused (freeze) or dropped (discard-columns), and the evolved
//! table read by DuckDB's Delta extension, Polars and the `deltalake` package.

mod common;

use std::path::Path;

use common::{ok, sluice};

/// `sluice convert SRC --table t --partition-by year(day)`.
fn convert(home: &Path, src: &Path) -> std::process::Output {
    common::convert(home, src, "t", "year(day)")
}

/// The rows of the Delta table at `dir` as "id|amount|colour|weight" (NULL empty), ordered by
/// id, from each of three readers sluice does not control, one block per reader.
fn readers(dir: &Path) -> String {
    let script = r#"
import os, sys, duckdb, polars as pl, deltalake
path = sys.argv[1]
cols = ["id", "amount", "colour", "weight"]
def show(rows):
    return "\n".join("|".join("" if v is None else str(v) for v in r) for r in rows)
con = duckdb_connect("delta")
print("duckdb")
print(show(con.execute(f"SELECT id, amount, colour, weight FROM delta_scan('{path}') ORDER BY id").fetchall()))
con.close()
print("polars")
df = pl.read_delta(path).sort("id")
print(show(df.select(cols).rows()))
print("deltalake")
t = deltalake.DeltaTable(path).to_pyarrow_table().sort_by("id")
print(show(zip(*[t[c].to_pylist() for c in cols])), flush=True)
os._exit(0)
"#;
    common::python(
        script,
        &[dir.to_str().unwrap()],
        "duckdb (delta extension), polars and deltalake",
    )
}

#[test]
fn columns_are_matched_by_name_added_refused_or_dropped_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let a = write(
        "a.csv",
        "id,day,amount\n1,2020-01-05,10\n2,2021-02-06,20\n3,2021-03-07,30\n",
    );
    ok(&convert(&home, &a));
    // Reordered columns and a new one: it is added, earlier rows read it as NULL.
    let b = write(
        "b.csv",
        "colour,amount,day,id\nred,40,2021-04-08,4\nblue,50,2022-05-09,5\n,60,2022-06-10,6\n",
    );
    ok(&convert(&home, &b));
    // JSON lines: a key the table lacks (a float) is added; a missing column is NULL.
    let c = write(
        "c.jsonl",
        "{\"id\": 7, \"day\": \"2022-07-11\", \"weight\": 1.5}\n{\"colour\": \"green\", \"id\": 8, \"day\": \"2023-01-01\", \"weight\": 2}\n",
    );
    ok(&convert(&home, &c));
    // An integer column never becomes float64 (Delta widens long only to decimal): the row
    // with a decimal is quarantined with the reason.
    let d = write(
        "d.csv",
        "id,day,amount\n9,2023-02-02,9.5\n10,2023-03-03,100\n",
    );
    let o = convert(&home, &d);
    ok(&o);
    let expected =
        "1|10||\n2|20||\n3|30||\n4|40|red|\n5|50|blue|\n6|60||\n7|||1.5\n8||green|2.0\n10|100||";
    let table = home.join("lake/t");
    assert_eq!(
        readers(&table),
        format!("duckdb\n{expected}\npolars\n{expected}\ndeltalake\n{expected}")
    );
    let sql = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT id, amount, colour, weight FROM t ORDER BY id",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(
        sql,
        "id,amount,colour,weight\n1,10,,\n2,20,,\n3,30,,\n4,40,red,\n5,50,blue,\n6,60,,\n7,,,1.5\n8,,green,2.0\n10,100,,\n"
    );
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
        q.contains("2,\"column \"\"amount\"\": cannot parse \"\"9.5\"\" as int64\""),
        "{q}"
    );
    let schema = ok(&sluice(&home, &["catalog", "schema", "t"]));
    assert!(
        schema.contains("colour") && schema.contains("weight"),
        "{schema}"
    );
    assert!(schema.contains("schema policy: evolve"), "{schema}");
    assert!(
        schema.contains("added colour string  from ")
            && schema.contains("b.csv")
            && schema.contains("added weight float64  from ")
            && schema.contains("c.jsonl"),
        "{schema}"
    );
    let history = ok(&sluice(&home, &["catalog", "history", "t"]));
    assert_eq!(history.matches("ADD COLUMNS").count(), 2, "{history}");

    // The pipeline (producer → embedded queue → consumer) evolves the same way.
    let g = write(
        "g.csv",
        "id,day,amount,channel\n11,2024-01-01,1,web\n12,2024-02-02,2,\n",
    );
    ok(&sluice(
        &home,
        &["run", g.to_str().unwrap(), "--table", "t"],
    ));
    let n = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n, count(channel) AS channels FROM t",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(n, "n,channels\n11,1\n");

    // freeze: the schema stays; the rows are quarantined with the reason.
    let refused = sluice(
        &home,
        &[
            "convert",
            g.to_str().unwrap(),
            "--table",
            "t",
            "--schema-policy",
            "freeze",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("sluice catalog alter t --schema-policy freeze"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ok(&sluice(
        &home,
        &["catalog", "alter", "t", "--schema-policy", "freeze"],
    ));
    let e = write(
        "e.csv",
        "id,day,amount,size\n13,2024-03-03,3,XL\n14,2024-04-04,4,S\n",
    );
    let o = convert(&home, &e);
    ok(&o);
    let q = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT line, reason FROM quarantine WHERE reason LIKE '%freeze%' ORDER BY line",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(
        q,
        "line,reason\n2,columns not in table t (its schema policy is freeze): size\n3,columns not in table t (its schema policy is freeze): size\n"
    );
    let schema = ok(&sluice(&home, &["catalog", "schema", "t"]));
    assert!(!schema.contains("size"), "{schema}");
    assert!(schema.contains("schema policy: freeze"), "{schema}");

    // discard-columns: the rows land without the new column.
    ok(&sluice(
        &home,
        &[
            "catalog",
            "alter",
            "t",
            "--schema-policy",
            "discard-columns",
        ],
    ));
    let f = write("f.csv", "size,id,day,amount\nM,15,2024-05-05,5\n");
    ok(&convert(&home, &f));
    let n = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n, sum(amount) AS amount FROM t WHERE id >= 13",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(n, "n,amount\n1,5\n");
    let schema = ok(&sluice(&home, &["catalog", "schema", "t"]));
    assert!(!schema.contains("size"), "{schema}");
}
