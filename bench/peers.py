"""Peers for `sluice bench --peers`: the same CSV to year-partitioned, zstd Parquet, each in its
fastest streaming form (the input is never loaded whole).

usage: python3 peers.py ENGINE CSV OUT_DIR     (ENGINE: duckdb | polars | pyarrow)
Prints the number of rows written.
"""
import sys

# TPC-H lineitem as tpchgen writes it (decimals as floats, dates as dates).
COLUMNS = [
    ("l_orderkey", "int64"), ("l_partkey", "int64"), ("l_suppkey", "int64"),
    ("l_linenumber", "int64"), ("l_quantity", "float64"), ("l_extendedprice", "float64"),
    ("l_discount", "float64"), ("l_tax", "float64"), ("l_returnflag", "string"),
    ("l_linestatus", "string"), ("l_shipdate", "date"), ("l_commitdate", "date"),
    ("l_receiptdate", "date"), ("l_shipinstruct", "string"), ("l_shipmode", "string"),
    ("l_comment", "string"),
]


def main() -> None:
    engine, csv, out = sys.argv[1:4]
    if engine == "duckdb":
        import duckdb

        types = {"int64": "BIGINT", "float64": "DOUBLE", "string": "VARCHAR", "date": "DATE"}
        cols = ", ".join(f"'{n}': '{types[t]}'" for n, t in COLUMNS)
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        n = con.execute(
            f"COPY (SELECT *, year(l_shipdate) AS year FROM read_csv('{csv}', header = true, "
            f"columns = {{{cols}}})) "
            f"TO '{out}' (FORMAT parquet, PARTITION_BY (year), COMPRESSION zstd)"
        ).fetchone()[0]
    elif engine == "polars":
        import polars as pl

        types = {"int64": pl.Int64, "float64": pl.Float64, "string": pl.String, "date": pl.Date}
        schema = {n: types[t] for n, t in COLUMNS}
        (
            pl.scan_csv(csv, schema=schema)
            .with_columns(pl.col("l_shipdate").dt.year().alias("year"))
            .sink_parquet(pl.PartitionBy(out, key="year"), compression="zstd", mkdir=True)
        )
        n = pl.scan_parquet(f"{out}/**/*.parquet").select(pl.len()).collect().item()
    elif engine == "pyarrow":
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
        import pyarrow.dataset as ds

        types = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string(),
                 "date": pa.date32()}
        reader = pcsv.open_csv(
            csv, convert_options=pcsv.ConvertOptions(column_types={n: types[t] for n, t in COLUMNS})
        )
        schema = reader.schema.append(pa.field("year", pa.int64()))
        count = [0]

        def batches():
            for b in reader:
                count[0] += b.num_rows
                yield pa.RecordBatch.from_arrays(
                    b.columns + [pc.year(b["l_shipdate"])], schema=schema
                )

        ds.write_dataset(
            pa.RecordBatchReader.from_batches(schema, batches()),
            out,
            format="parquet",
            partitioning=["year"],
            partitioning_flavor="hive",
            file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
            existing_data_behavior="overwrite_or_ignore",
        )
        n = count[0]
    else:
        raise SystemExit(f"unknown engine {engine}")
    print(n)


if __name__ == "__main__":
    main()
