//! Keyed tables (`--merge-key`, `--op-column`, `--sequence-by`): changes applied exactly once,
//! whatever order they arrive in, checked against a model by readers sluice does not control
//! (DuckDB's Delta extension, Polars, the `deltalake` package).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{command, ok, python, sluice};

/// One change of the generated data set.
#[derive(Debug, Clone)]
struct Change {
    op: &'static str,
    id: u64,
    name: String,
    cents: i64,
    seq: u64,
    day: String,
}

impl Change {
    fn line(&self) -> String {
        if self.op == "D" {
            // DMS writes a delete's other columns; some sources leave them empty.
            format!("D,{},,,{},{}", self.id, self.seq, self.day)
        } else {
            format!(
                "{},{},{},{}.{:02},{},{}",
                self.op,
                self.id,
                self.name,
                self.cents / 100,
                self.cents % 100,
                self.seq,
                self.day
            )
        }
    }
}

/// A small deterministic generator (xorshift), so that every run checks the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const HEADER: &str = "Op,id,name,amount,ts,d";

/// The initial load (`I` of keys 0..keys, sequence 0) and `files` change files: updates,
/// deletes, re-inserts and inserts of new keys, several changes of one key in one file, their
/// sequences spread over the files out of order. Key 7 is deleted by the newest change of all
/// (in file 0) and updated by an older one (in the last file): converted in order, the update
/// arrives late and must not bring the key back.
fn data_set(dir: &Path, keys: u64, changes: u64, files: usize) -> (PathBuf, Vec<PathBuf>, String) {
    let mut rng = Rng(0x5eed_cafe_f00d);
    let day = |rng: &mut Rng| {
        format!(
            "{}-{:02}-{:02}",
            2019 + rng.below(5),
            1 + rng.below(12),
            1 + rng.below(28)
        )
    };
    let mut all: Vec<Change> = (0..keys)
        .map(|id| Change {
            op: "I",
            id,
            name: format!("load{id}"),
            cents: rng.below(1_000_000) as i64,
            seq: 0,
            day: day(&mut rng),
        })
        .collect();
    let load = dir.join("load.csv");
    write_csv(&load, &all);
    let mut per_file: Vec<Vec<Change>> = vec![Vec::new(); files];
    for i in 1..=changes {
        let id = rng.below(keys + keys / 4);
        let op = match rng.below(20) {
            0..=10 => "U",
            11..=14 => "D",
            _ => "I",
        };
        let c = Change {
            op,
            id,
            name: format!("n{i}"),
            cents: rng.below(1_000_000) as i64,
            seq: i * 10,
            day: day(&mut rng),
        };
        per_file[rng.below(files as u64) as usize].push(c.clone());
        all.push(c);
    }
    let delete_7 = Change {
        op: "D",
        id: 7,
        name: String::new(),
        cents: 0,
        seq: changes * 10 + 5,
        day: "2019-01-01".into(),
    };
    let late_7 = Change {
        op: "U",
        id: 7,
        name: "late".into(),
        cents: 100,
        seq: changes * 10 - 5,
        day: "2020-01-01".into(),
    };
    per_file[0].push(delete_7.clone());
    per_file[files - 1].push(late_7.clone());
    all.push(delete_7);
    all.push(late_7);
    let paths = per_file
        .iter_mut()
        .enumerate()
        .map(|(f, rows)| {
            // Rows in no particular order within a file either.
            for i in (1..rows.len()).rev() {
                rows.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let p = dir.join(format!("changes-{f}.csv"));
            write_csv(&p, rows);
            p
        })
        .collect();
    (load, paths, model(&all))
}

fn write_csv(path: &Path, rows: &[Change]) {
    let mut text = String::from(HEADER);
    for r in rows {
        text.push('\n');
        text.push_str(&r.line());
    }
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// The table every order of applying `all` must give: per key, its change of the greatest
/// sequence, unless that is a delete; one line `id|name|amount|ts|d` per key, by key.
fn model(all: &[Change]) -> String {
    let mut last: BTreeMap<u64, &Change> = BTreeMap::new();
    for c in all {
        match last.get(&c.id) {
            Some(have) if have.seq > c.seq => {}
            _ => {
                last.insert(c.id, c);
            }
        }
    }
    last.values()
        .filter(|c| c.op != "D")
        .map(|c| {
            format!(
                "{}|{}|{}.{:02}|{}|{}",
                c.id,
                c.name,
                c.cents / 100,
                c.cents % 100,
                c.seq,
                c.day
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The table's rows as DuckDB's Delta extension, Polars and the `deltalake` package read them,
/// asserted equal, one line `id|name|amount|ts|d` per row, by key.
fn readers_rows(table: &Path) -> String {
    python(
        r#"
import os, sys, polars as pl, deltalake
p = sys.argv[1]
cols = ['id', 'name', 'amount', 'ts', 'd']
def canon(rows):
    return "\n".join("|".join(str(v) for v in r) for r in sorted(rows))
con = duckdb_connect('delta')
a = canon(con.execute(f"select {', '.join(cols)} from delta_scan('{p}')").fetchall())
b = canon(pl.read_delta(p).select(cols).rows())
t = deltalake.DeltaTable(p).to_pyarrow_table(columns=cols)
c = canon(zip(*[t.column(n).to_pylist() for n in cols]))
assert a == b, "DuckDB and Polars differ"
assert a == c, "DuckDB and deltalake differ"
print(a)
sys.stdout.flush()
os._exit(0)
"#,
        &[table.to_str().unwrap()],
        "duckdb, polars and deltalake",
    )
}

const KEYED: [&str; 10] = [
    "--table",
    "orders",
    "--partition-by",
    "year(d)",
    "--merge-key",
    "id",
    "--op-column",
    "Op",
    "--sequence-by",
    "ts",
];

/// `convert` of one source into the keyed table; files rotate at 100 rows, so that a merge
/// rewrites some files of a partition and leaves the others (by their key statistics).
fn convert(home: &Path, src: &Path) -> String {
    let mut args = vec![
        "convert",
        src.to_str().unwrap(),
        "--exact-decimals",
        "--rotate-rows",
        "100",
    ];
    args.extend(KEYED);
    ok(&sluice(home, &args))
}

/// Per column of `lines` (the readers' or the model's), the count, distinct keys and sum of
/// amounts in cents, for a message that says more than "differs".
fn summary(lines: &str) -> (usize, usize, i64) {
    let rows: Vec<Vec<&str>> = lines.lines().map(|l| l.split('|').collect()).collect();
    let mut ids: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    ids.dedup();
    let cents = rows
        .iter()
        .map(|r| r[2].replace('.', "").parse::<i64>().unwrap())
        .sum();
    (rows.len(), ids.len(), cents)
}

#[test]
fn changes_converted_file_by_file_give_the_model_in_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (load, changes, want) = data_set(dir.path(), 2_000, 3_000, 5);
    convert(&home, &load);
    for c in &changes {
        convert(&home, c);
    }
    let table = home.join("lake/orders");
    let got = readers_rows(&table);
    assert_eq!(summary(&got), summary(&want));
    assert_eq!(got, want);
    let files = python(
        "import sys, deltalake\nprint(len(deltalake.DeltaTable(sys.argv[1]).file_uris()))",
        &[table.to_str().unwrap()],
        "deltalake",
    );
    assert!(
        files.parse::<u32>().unwrap() > 15,
        "files of 100 rows: {files}"
    );
    // Key 7: deleted by the newest change, updated late by an older one.
    assert!(!got.lines().any(|l| l.starts_with("7|")), "key 7 came back");

    // A file converted again, and a copy of one under another name, change nothing.
    convert(&home, &changes[2]);
    let copy = dir.path().join("copy.csv");
    std::fs::copy(&changes[3], &copy).unwrap();
    convert(&home, &copy);
    assert_eq!(readers_rows(&table), want);

    // The operation column is not stored; the key and sequence are shown.
    let cols = ok(&sluice(&home, &["catalog", "schema", "orders"]));
    assert!(
        cols.lines()
            .any(|l| l.trim_start().starts_with("op ") && l.ends_with("not stored)")),
        "{cols}"
    );
    assert!(
        cols.contains("(merge key)") && cols.contains("(sequence)"),
        "{cols}"
    );
    assert!(
        cols.contains("keyed: a change replaces the row of the same id"),
        "{cols}"
    );
    let fields = python(
        "import sys, deltalake\nprint(','.join(f.name for f in deltalake.DeltaTable(sys.argv[1]).schema().fields))",
        &[table.to_str().unwrap()],
        "deltalake",
    );
    assert_eq!(fields, "id,name,amount,ts,d,year");
    // Every version after the table's creation is a merge, with its counts; in all they add
    // up to the model: inserts less deletes is the keys held.
    let history = ok(&sluice(&home, &["catalog", "history", "orders"]));
    let merges: Vec<Vec<u64>> = history
        .lines()
        .filter(|l| l.contains("\tMERGE\t"))
        .map(|l| {
            let m = l.rsplit('\t').next().unwrap();
            m.split(' ')
                .filter_map(|w| w.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect();
    assert_eq!(merges.len(), 1 + changes.len(), "{history}");
    let (ins, del): (u64, u64) = merges.iter().fold((0, 0), |a, m| (a.0 + m[0], a.1 + m[2]));
    assert_eq!((ins - del) as usize, summary(&want).0, "{history}");
    // Sluice's own engine reads the same rows.
    let n = ok(&sluice(
        &home,
        &[
            "query",
            "--format",
            "csv",
            "select count(*) as n from orders",
        ],
    ));
    assert_eq!(
        n.lines().nth(1),
        Some(summary(&want).0.to_string().as_str())
    );
    // Version 1 is the load's merge: --as-of shows the table as it was then.
    let then = ok(&sluice(
        &home,
        &[
            "query",
            "--as-of",
            "1",
            "--format",
            "csv",
            "select count(*) as n, min(ts) as lo, max(ts) as hi from orders",
        ],
    ));
    assert_eq!(then.lines().nth(1), Some("2000,0,0"));
}

#[test]
fn the_same_changes_through_the_queue_shuffled_twice_with_two_consumers_give_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (load, changes, want) = data_set(dir.path(), 2_000, 3_000, 5);
    // Small messages: each file is several chunks, for the two consumers to share.
    small_queue(&home, "30");
    let produce = |src: &Path| {
        let mut args = vec!["produce", src.to_str().unwrap(), "--exact-decimals"];
        args.extend(KEYED);
        ok(&sluice(&home, &args));
    };
    produce(&load);
    // Every change file twice, newest-first and then in another order.
    for i in [4, 1, 3, 0, 2, 2, 0, 4, 3, 1] {
        produce(&changes[i]);
    }
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            command(
                &home,
                &[
                    "consume",
                    "--table",
                    "orders",
                    "--once",
                    "--visibility-timeout",
                    "30",
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut wrote = 0;
    for c in consumers {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        if !err.contains(" 0 written") {
            wrote += 1;
        }
    }
    assert_eq!(wrote, 2, "both consumers merged changes");
    let got = readers_rows(&home.join("lake/orders"));
    assert_eq!(summary(&got), summary(&want));
    assert_eq!(got, want);
}

/// Creates queue `orders` with 2 KiB messages and the given visibility timeout (seconds).
fn small_queue(home: &Path, visibility: &str) {
    ok(&sluice(
        home,
        &[
            "queue",
            "create",
            "--queue",
            "orders",
            "--visibility-timeout",
            visibility,
            "--max-message-bytes",
            "2048",
            "--max-receive-count",
            "1000",
        ],
    ));
}

/// Runs `cmd` and SIGKILLs it after `after`, unless it ended first.
fn run_and_kill(mut cmd: std::process::Command, after: Duration) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + after;
    while Instant::now() < end && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn consumers_killed_while_they_merge_leave_the_model_and_no_reader_sees_a_key_twice() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (load, changes, want) = data_set(dir.path(), 2_000, 3_000, 5);
    small_queue(&home, "2");
    let produce = |src: &Path| {
        let mut args = vec!["produce", src.to_str().unwrap(), "--exact-decimals"];
        args.extend(KEYED);
        ok(&sluice(&home, &args));
    };
    produce(&load);
    for c in changes.iter().rev().chain(&changes) {
        produce(c);
    }
    // A reader polls the table until told to stop: every version it reads holds each key once.
    let table = home.join("lake/orders");
    let stop = dir.path().join("stop");
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let watcher = std::process::Command::new(python)
        .arg("-c")
        .arg(
            r#"
import os, sys, time, deltalake
path, stop = sys.argv[1], sys.argv[2]
reads = 0
while not os.path.exists(stop):
    try:
        t = deltalake.DeltaTable(path)
    except Exception:
        time.sleep(0.05)
        continue
    ids = t.to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    if len(ids) != len(set(ids)):
        sys.exit(f"version {t.version()}: {len(ids) - len(set(ids))} key(s) twice")
    reads += 1
print(reads, flush=True)
os._exit(0)
"#,
        )
        .arg(&table)
        .arg(&stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Another writer (the `deltalake` package) appends rows of new keys while the consumers
    // merge: each append makes a merge that read before it plan again.
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let appender = std::process::Command::new(python)
        .arg("-c")
        .arg(
            r#"
import datetime, decimal, os, sys, time, pyarrow as pa
from deltalake import DeltaTable, write_deltalake
path = sys.argv[1]
deadline = time.time() + 120
while not os.path.exists(os.path.join(path, "_delta_log", "00000000000000000001.json")):
    if time.time() > deadline:
        sys.exit("the table never got its first rows")
    time.sleep(0.05)
schema = pa.schema(DeltaTable(path).schema().to_arrow())
for k in range(FOREIGN):
    row = {"id": [10_000_000 + k], "name": [f"foreign{k}"], "amount": [decimal.Decimal("1.00")],
           "ts": [0], "d": [datetime.date(2030, 1, 1)], "year": [2030]}
    batch = pa.table({f.name: pa.array(row[f.name], f.type) for f in schema}, schema=schema)
    # deltalake refuses an append that raced with a merge removing files it considers read;
    # like any job, it tries again.
    for attempt in range(50):
        try:
            write_deltalake(path, batch, mode="append", partition_by=["year"])
            break
        except Exception as e:
            if "concurrent" not in str(e) or attempt == 49:
                raise
            time.sleep(0.05)
    time.sleep(0.3)
print(FOREIGN, flush=True)
os._exit(0)
"#
            .replace("FOREIGN", &FOREIGN.to_string()),
        )
        .arg(&table)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Consumers commit every few messages: many merges, for the kills to land in.
    let consume = |once: bool| {
        let mut args = vec![
            "consume",
            "--table",
            "orders",
            "--visibility-timeout",
            "2",
            "--max-uncommitted",
            "8KiB",
        ];
        if once {
            args.push("--once");
        }
        command(&home, &args)
    };
    let mut rng = Rng(0xdead_beef_1234);
    for k in 0..12 {
        run_and_kill(consume(false), Duration::from_millis(100 + rng.below(900)));
        // Compaction beside the merges, now and then.
        if k % 4 == 3 {
            ok(&sluice(&home, &["compact", "--table", "orders"]));
        }
    }
    // The other writer's appends are all in before the last consumer drains the queue.
    let a = appender.wait_with_output().unwrap();
    assert!(
        a.status.success(),
        "the other writer failed: {}",
        String::from_utf8_lossy(&a.stderr)
    );
    ok(&consume(true).output().unwrap());
    // Its commits and sluice's merges interleaved.
    let order = common::writers_in_order(&table);
    eprintln!("versions by writer (S sluice, D deltalake): {order}");
    let (first, last) = (order.find('D').unwrap(), order.rfind('D').unwrap());
    assert!(
        order[first..last].contains('S'),
        "the other writer never wrote between sluice's merges: {order}"
    );
    std::fs::write(&stop, "").unwrap();
    let w = watcher.wait_with_output().unwrap();
    assert!(
        w.status.success(),
        "a reader saw a key twice: {}",
        String::from_utf8_lossy(&w.stderr)
    );
    let reads: u64 = String::from_utf8_lossy(&w.stdout).trim().parse().unwrap();
    assert!(reads > 0, "the reader read the table");
    let got = readers_rows(&table);
    let want = (0..FOREIGN)
        .map(|k| format!("{}|foreign{k}|1.00|0|2030-01-01", 10_000_000 + k))
        .fold(want, |w, l| w + "\n" + &l);
    assert_eq!(summary(&got), summary(&want));
    assert_eq!(got, want);
}

/// Rows the other writer of the SIGKILL test appends, one at a time.
const FOREIGN: u64 = 10;

#[test]
fn debezium_style_json_lines_and_parquet_changes_apply_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let a = dir.path().join("a.jsonl");
    std::fs::write(
        &a,
        concat!(
            r#"{"op":"c","id":1,"v":"a","lsn":1}"#,
            "\n",
            r#"{"op":"c","id":2,"v":"b","lsn":2}"#,
            "\n",
            r#"{"op":"r","id":3,"v":"c","lsn":3}"#,
            "\n",
        ),
    )
    .unwrap();
    let b = dir.path().join("b.jsonl");
    std::fs::write(
        &b,
        concat!(
            r#"{"op":"u","id":1,"v":"a2","lsn":10}"#,
            "\n",
            r#"{"op":"d","id":2,"lsn":11}"#,
            "\n",
            r#"{"op":"u","id":3,"v":"old","lsn":0}"#,
            "\n",
            r#"{"op":"c","id":4,"v":"d","lsn":12}"#,
            "\n",
            r#"{"op":"x","id":5,"v":"bad","lsn":13}"#,
            "\n",
        ),
    )
    .unwrap();
    let c = dir.path().join("c.parquet");
    python(
        "import sys, pyarrow as pa, pyarrow.parquet as pq\npq.write_table(pa.table({'op': ['U', 'D', 'I'], 'id': pa.array([4, 1, 9], pa.int64()), 'v': ['d2', None, 'z'], 'lsn': pa.array([20, 21, 22], pa.int64())}), sys.argv[1])",
        &[c.to_str().unwrap()],
        "pyarrow",
    );
    for src in [&a, &b, &c] {
        ok(&sluice(
            &home,
            &[
                "convert",
                src.to_str().unwrap(),
                "--table",
                "ev",
                "--merge-key",
                "id",
                "--op-column",
                "op",
                "--sequence-by",
                "lsn",
            ],
        ));
    }
    let rows = python(
        r#"
import os, sys, deltalake
t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table(columns=["id", "v", "lsn"]).sort_by("id")
print(";".join(f"{i},{v},{l}" for i, v, l in zip(*[t.column(c).to_pylist() for c in ["id", "v", "lsn"]])))
sys.stdout.flush()
os._exit(0)
"#,
        &[home.join("lake/ev").to_str().unwrap()],
        "deltalake",
    );
    // 1 updated then deleted, 2 deleted, 3's older update ignored, 4 updated, 9 inserted.
    assert_eq!(rows, "3,c,3;4,d2,20;9,z,22");
    let q = ok(&sluice(
        &home,
        &["query", "--format", "csv", "select reason from quarantine"],
    ));
    // (CSV doubles the quotes of the reason.)
    assert!(q.contains(r#"""x"" is not an operation"#), "{q}");
}

#[test]
fn another_writer_appends_and_deletes_between_merges_and_the_protocol_stays_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (load, changes, want) = data_set(dir.path(), 2_000, 3_000, 5);
    convert(&home, &load);
    convert(&home, &changes[0]);
    let table = home.join("lake/orders");
    // A key no change touches, which the other writer deletes.
    let touched: std::collections::HashSet<u64> = changes
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
                .collect::<Vec<u64>>()
        })
        .collect();
    let gone = (0..2_000).find(|k| !touched.contains(k)).unwrap();
    let out = python(
        r#"
import datetime, decimal, os, sys, pyarrow as pa
from deltalake import DeltaTable, write_deltalake
path, gone = sys.argv[1], int(sys.argv[2])
dt = DeltaTable(path)
schema = pa.schema(dt.schema().to_arrow())
row = {"id": [10_000_000], "name": ["foreign"], "amount": [decimal.Decimal("1.00")], "ts": [0],
       "d": [datetime.date(2030, 1, 1)], "year": [2030]}
write_deltalake(path, pa.table({f.name: pa.array(row[f.name], f.type) for f in schema}, schema=schema),
                mode="append", partition_by=["year"])
DeltaTable(path).delete(f"id = {gone}")
p = DeltaTable(path).protocol()
print(p.min_reader_version, p.min_writer_version, p.writer_features)
sys.stdout.flush()
os._exit(0)
"#,
        &[table.to_str().unwrap(), &gone.to_string()],
        "deltalake",
    );
    assert_eq!(out, "1 2 None", "the protocol sluice made the table with");
    for c in &changes[1..] {
        convert(&home, c);
    }
    let mut expected: Vec<String> = want
        .lines()
        .filter(|l| !l.starts_with(&format!("{gone}|")))
        .map(str::to_string)
        .collect();
    expected.push("10000000|foreign|1.00|0|2030-01-01".into());
    assert_eq!(readers_rows(&table), expected.join("\n"));
}
