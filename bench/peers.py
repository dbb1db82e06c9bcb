"""Peers for `sluice bench --peers`: the same CSV to year-partitioned, zstd Parquet.

usage: python3 peers.py ENGINE CSV OUT_DIR     (ENGINE: duckdb | polars | pyarrow)
Prints the number of rows written.
"""
import sys


def main() -> None:
    engine, csv, out = sys.argv[1:4]
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(
            f"COPY (SELECT *, year(l_shipdate) AS year FROM read_csv('{csv}', header = true)) "
            f"TO '{out}' (FORMAT parquet, PARTITION_BY (year), COMPRESSION zstd)"
        )
        n = con.execute(f"SELECT count(*) FROM read_parquet('{out}/**/*.parquet')").fetchone()[0]
    elif engine == "polars":
        import polars as pl

        df = pl.read_csv(csv, try_parse_dates=True)
        df = df.with_columns(pl.col("l_shipdate").dt.year().alias("year"))
        df.write_parquet(out, partition_by="year", compression="zstd")
        n = df.height
    elif engine == "pyarrow":
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
        import pyarrow.dataset as ds

        t = pcsv.read_csv(csv)
        t = t.append_column("year", pc.year(t["l_shipdate"]))
        ds.write_dataset(
            t,
            out,
            format="parquet",
            partitioning=["year"],
            partitioning_flavor="hive",
            file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
        )
        n = t.num_rows
    else:
        raise SystemExit(f"unknown engine {engine}")
    print(n)


if __name__ == "__main__":
    main()
