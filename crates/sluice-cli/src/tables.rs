//! `query` and `catalog tables|schema|partitions|history|alter|ddl`.

use anyhow::Result;
use sluice_core::schema::partition::PartitionSpec;
use sluice_core::table::policy::SchemaPolicy;

use crate::Ctx;
use crate::args::*;
use crate::{athena, output};

pub(crate) async fn query(ctx: &Ctx, a: &QueryArgs) -> Result<()> {
    if a.engine == Engine::Athena {
        return athena::query(ctx, a).await;
    }
    let catalog = ctx.open.catalog().await?;
    let lake = ctx.open.lake().await?;
    let as_of = match &a.as_of {
        Some(s) => sluice_query::AsOf::parse(s)?,
        None => sluice_query::AsOf::Latest,
    };
    let engine =
        sluice_query::QueryEngine::new_as_of(&*catalog, &lake, ctx.database(), as_of).await?;
    let (schema, batches) = engine.sql(&a.sql).await?;
    output::write(a.format, schema, &batches, a.output.as_deref())
}

pub(crate) async fn catalog_cmd(ctx: &Ctx, c: CatalogCommand) -> Result<()> {
    let catalog = ctx.open.catalog().await?;
    let db = ctx.database();
    match c {
        CatalogCommand::Ddl { table } => {
            let t = catalog.get_table(db, &table).await?;
            print!("{}", sluice_aws::ddl::create_table(&t)?);
        }
        CatalogCommand::Tables => {
            for t in catalog.list_tables(db).await.unwrap_or_default() {
                let spec = t
                    .parameters
                    .get(sluice_core::catalog::PARAM_PARTITION_BY)
                    .cloned()
                    .unwrap_or_default();
                let spec = PartitionSpec::parse(&spec)
                    .map(|s| s.describe())
                    .unwrap_or(spec);
                println!("{}\t{}\tpartitioned by {spec}", t.name, t.location);
            }
        }
        CatalogCommand::Schema { table } => {
            let t = catalog.get_table(db, &table).await?;
            println!("table {}.{} at {}", t.database, t.name, t.location);
            let from = |c: &sluice_core::schema::Column| match &c.source_name {
                Some(n) => format!(" (from {n:?})"),
                None => String::new(),
            };
            let keys = sluice_core::table::keyed::KeySpec::of_params(&t.parameters)?;
            let role = |c: &sluice_core::schema::Column| match &keys {
                Some(k) if k.op.as_ref() == Some(&c.name) && !k.keep_op => {
                    " (the operation of each change, not stored)"
                }
                Some(k) if k.op.as_ref() == Some(&c.name) => " (the operation of each change)",
                Some(k) if k.key.contains(&c.name) => " (merge key)",
                Some(k) if k.sequence.as_ref() == Some(&c.name) => " (sequence)",
                _ => "",
            };
            for c in &t.columns {
                println!("  {:<32} {}{}{}", c.name, c.ty.name(), from(c), role(c));
            }
            for c in &t.partition_keys {
                println!(
                    "  {:<32} {} (partition key){}",
                    c.name,
                    c.ty.name(),
                    from(c)
                );
            }
            println!("schema policy: {}", SchemaPolicy::of_def(&t)?);
            println!("column names: {}", t.column_names()?.name());
            if let Some(k) = &keys {
                println!("keyed: {}", k.explain());
            }
            let changes = sluice_core::table::policy::history(&t);
            if changes.is_empty() {
                println!("schema history: as created");
            } else {
                println!("schema history:");
                for c in changes {
                    let named = |cols: &[sluice_core::schema::Column]| -> String {
                        cols.iter()
                            .map(|c| format!("{} {}", c.name, c.ty.name()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let mut what = Vec::new();
                    if !c.added.is_empty() {
                        what.push(format!("added {}", named(&c.added)));
                    }
                    if !c.widened.is_empty() {
                        what.push(format!("struct fields added: {}", named(&c.widened)));
                    }
                    println!(
                        "  {}  Delta version {}  {}  from {}",
                        c.at,
                        c.version
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                        what.join("; "),
                        c.source
                    );
                }
            }
        }
        CatalogCommand::Alter {
            table,
            schema_policy,
        } => {
            sluice_core::table::policy::set_policy(&*catalog, db, &table, schema_policy).await?;
            println!("table {table}: schema policy {schema_policy}");
        }
        CatalogCommand::History { table, limit } => {
            catalog.get_table(db, &table).await?;
            let lake = ctx.open.lake().await?;
            let dir = sluice_core::lake::Lake::table_dir(&table);
            println!(
                "version\tcommitted (UTC)\toperation\trows\tfiles\tchunk parts\twriter\tmerged"
            );
            for h in sluice_core::delta::log::history(&lake, &dir, limit).await? {
                let merged = h.merge.map_or_else(
                    || "-".to_string(),
                    |m| {
                        format!(
                            "inserted {} updated {} deleted {} ignored {}",
                            m.inserted, m.updated, m.deleted, m.ignored
                        )
                    },
                );
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    h.version,
                    chrono::DateTime::from_timestamp_millis(h.timestamp_ms)
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
                        .unwrap_or_else(|| "-".into()),
                    h.operation,
                    h.rows.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    h.files_added,
                    h.chunk_parts,
                    h.writer.as_deref().unwrap_or("-"),
                    merged
                );
            }
        }
        CatalogCommand::Partitions { table } => {
            let def = catalog.get_table(db, &table).await?;
            let lake = ctx.open.lake().await?;
            let ledger = sluice_core::delta::log::Ledger::open(&lake, &table, "catalog").await?;
            println!("partition\tfiles\trows\tbytes\tlocation");
            for p in ledger.state().partitions() {
                let values: Vec<&str> = p
                    .values
                    .iter()
                    .map(|(_, v)| {
                        v.as_deref()
                            .unwrap_or(sluice_core::schema::partition::DEFAULT_PARTITION)
                    })
                    .collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}{}/",
                    values.join("/"),
                    p.files,
                    p.rows,
                    p.bytes,
                    def.location,
                    p.dir
                );
            }
        }
    }
    Ok(())
}
