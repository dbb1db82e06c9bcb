//! Choosing each backend by URL: `--queue sqs://NAME|URL|name`, `--lake s3://B/P|dir`,
//! `--catalog glue://DATABASE` (the embedded ones by default).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sluice_aws::sqs::{QueueRef, SqsQueue};
use sluice_aws::{Aws, AwsSettings};
use sluice_core::DEFAULT_DATABASE;
use sluice_core::catalog::{Catalog, SqliteCatalog};
use sluice_core::home::Home;
use sluice_core::lake::Lake;
use sluice_core::lake::MeteredStore;
use sluice_core::metrics::Meter;
use sluice_core::queue::MeteredQueue;
use sluice_core::queue::admin::{EmbeddedAdmin, QueueAdmin};
use sluice_core::queue::dead_letter_name;
use sluice_core::queue::{ClaimCheckQueue, MAX_MESSAGE_BYTES, Queue, QueueSettings};

/// Where the queue lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueTarget {
    Embedded(String),
    Sqs(QueueRef),
}

impl QueueTarget {
    /// The queue's name (an SQS queue given by URL: the last part of the URL).
    pub fn name(&self) -> &str {
        match self {
            QueueTarget::Embedded(n) => n,
            QueueTarget::Sqs(r) => r.name(),
        }
    }

    /// `--queue` (or the table's name when there is none).
    pub fn parse(queue: Option<&str>, table: Option<&str>) -> Result<Self> {
        match (queue, table) {
            (Some(q), _) if q.starts_with("sqs://") || q.contains("://") => {
                Ok(QueueTarget::Sqs(QueueRef::parse(q)?))
            }
            (Some(q), _) => Ok(QueueTarget::Embedded(q.to_string())),
            (None, Some(t)) => Ok(QueueTarget::Embedded(t.to_string())),
            (None, None) => bail!("name the queue with --queue (or SLUICE_QUEUE)"),
        }
    }
}

/// Where the catalog lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogTarget {
    Embedded,
    Glue(String),
}

impl CatalogTarget {
    pub fn parse(s: Option<&str>) -> Result<Self> {
        match s {
            None | Some("") | Some("embedded") => Ok(CatalogTarget::Embedded),
            Some(s) => match s.strip_prefix("glue://") {
                Some(db) => {
                    let db = db.trim_end_matches('/');
                    sluice_core::schema::validate_name("database", db)?;
                    Ok(CatalogTarget::Glue(db.to_string()))
                }
                None => bail!(
                    "catalog {s:?}: expected glue://DATABASE, or nothing for the embedded catalog"
                ),
            },
        }
    }

    pub fn database(&self) -> &str {
        match self {
            CatalogTarget::Embedded => DEFAULT_DATABASE,
            CatalogTarget::Glue(db) => db,
        }
    }
}

/// The backends of one command, unmetered; see [`Backends::metered`].
#[derive(Clone)]
pub struct Backends {
    pub queue: Arc<dyn Queue>,
    pub catalog: Arc<dyn Catalog>,
    pub lake: Lake,
    pub database: String,
}

/// The catalog and the lake of a command that uses no queue.
pub struct Stores {
    pub catalog: Arc<dyn Catalog>,
    pub lake: Lake,
    pub database: String,
}

/// Backends seen through a meter (and claim-check), for one role.
#[derive(Clone)]
pub struct Metered {
    pub queue: Arc<dyn Queue>,
    pub lake: Lake,
    pub meter: Arc<Meter>,
}

impl Backends {
    /// The queue and lake with every request counted in a new meter; with `claim_bytes`,
    /// messages larger than a few KiB go to the lake and the queue carries pointers.
    pub fn metered(&self, role: &'static str, claim_bytes: Option<usize>) -> Metered {
        let meter = Meter::for_role(role);
        let lake = Lake {
            store: Arc::new(MeteredStore::new(self.lake.store.clone(), meter.clone())),
            ..self.lake.clone()
        };
        let wire: Arc<dyn Queue> = Arc::new(MeteredQueue::new(self.queue.clone(), meter.clone()));
        let queue = Arc::new(ClaimCheckQueue::new(wire, lake.clone(), claim_bytes));
        Metered { queue, lake, meter }
    }
}

/// Everything needed to open backends.
#[derive(Clone)]
pub struct Opener {
    pub home: Home,
    pub queue: Option<String>,
    pub lake: Option<String>,
    pub catalog: CatalogTarget,
    pub aws_settings: AwsSettings,
    /// The AWS configuration, loaded once (the region and credential chains may ask the
    /// instance metadata service) and shared by every client of the command.
    pub aws: Arc<tokio::sync::OnceCell<Aws>>,
}

impl Opener {
    pub fn uses_aws(&self) -> bool {
        matches!(self.catalog, CatalogTarget::Glue(_))
            || self.lake.as_deref().is_some_and(|l| l.starts_with("s3://"))
            || matches!(
                QueueTarget::parse(self.queue.as_deref(), Some("x")),
                Ok(QueueTarget::Sqs(_))
            )
    }

    pub async fn aws(&self) -> &Aws {
        self.aws
            .get_or_init(|| Aws::load(self.aws_settings.clone()))
            .await
    }

    /// Creates the home directory, which the embedded backends and consumer spools live in.
    pub fn ensure_home(&self) -> Result<()> {
        std::fs::create_dir_all(&self.home.root)
            .with_context(|| format!("cannot create home {}", self.home.root.display()))
    }

    pub fn queue_target(&self, table: Option<&str>) -> Result<QueueTarget> {
        QueueTarget::parse(self.queue.as_deref(), table)
    }

    /// The lake (not metered).
    pub async fn lake(&self) -> Result<Lake> {
        match self.lake.as_deref() {
            Some(u) if u.starts_with("s3://") => Ok(sluice_aws::s3::s3_lake(self.aws().await, u)?),
            other => Ok(self.home.lake(other)?),
        }
    }

    pub async fn catalog(&self) -> Result<Arc<dyn Catalog>> {
        Ok(match &self.catalog {
            CatalogTarget::Embedded => {
                self.ensure_home()?;
                Arc::new(SqliteCatalog::open(self.home.catalog_db())?)
            }
            CatalogTarget::Glue(_) => {
                Arc::new(sluice_aws::glue::GlueCatalog::new(self.aws().await))
            }
        })
    }

    /// Opens the queue. An embedded queue (and its dead-letter queue) is created if missing;
    /// an SQS queue must exist (`sluice init` creates it).
    pub async fn queue(&self, target: &QueueTarget) -> Result<Arc<dyn Queue>> {
        match target {
            QueueTarget::Embedded(name) => {
                self.ensure_home()?;
                let qs = self.home.queues()?;
                qs.ensure_with_dead_letter(name, &QueueSettings::embedded())
                    .await?;
                Ok(Arc::new(qs.queue(name).await?))
            }
            QueueTarget::Sqs(r) => match SqsQueue::open(self.aws().await, r).await {
                Ok(q) => Ok(Arc::new(q)),
                Err(sluice_core::Error::NotFound { .. }) => bail!(
                    "SQS queue {} does not exist: create it (and its dead-letter queue) with `sluice --queue {} init`",
                    r.name(),
                    match r {
                        QueueRef::Name(n) => format!("sqs://{n}"),
                        QueueRef::Url(u) => u.clone(),
                    }
                ),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// The administration of `target`'s backend, and the name to give it for the queue.
    pub async fn queue_admin(&self, target: &QueueTarget) -> Result<(Arc<dyn QueueAdmin>, String)> {
        Ok(match target {
            QueueTarget::Embedded(n) => {
                self.ensure_home()?;
                let admin = EmbeddedAdmin {
                    queues: self.home.queues()?,
                    path: self.home.queue_db(),
                };
                (Arc::new(admin), n.clone())
            }
            QueueTarget::Sqs(r) => {
                let admin = sluice_aws::sqs::SqsQueues {
                    aws: self.aws().await.clone(),
                };
                let name = match r {
                    QueueRef::Name(n) => n.clone(),
                    QueueRef::Url(u) => u.clone(),
                };
                (Arc::new(admin), name)
            }
        })
    }

    /// The dead-letter queue of `target`, if it has one.
    pub async fn dead_letter_queue(&self, target: &QueueTarget) -> Result<Option<Arc<dyn Queue>>> {
        match target {
            QueueTarget::Embedded(n) => {
                let qs = self.home.queues()?;
                Ok(qs
                    .queue(&dead_letter_name(n))
                    .await
                    .ok()
                    .map(|q| Arc::new(q) as Arc<dyn Queue>))
            }
            QueueTarget::Sqs(r) => {
                let q = SqsQueue::open(self.aws().await, r).await?;
                Ok(q.dead_letter_queue()
                    .await?
                    .map(|d| Arc::new(d) as Arc<dyn Queue>))
            }
        }
    }

    /// The queue commands without a table work on: `--queue` if given, else the one queue of
    /// the home (dead-letter queues aside), or an error naming them if there are several.
    pub async fn the_queue(&self) -> Result<QueueTarget> {
        if self.queue.is_some() {
            return self.queue_target(None);
        }
        let names = self.home_queue_names().await?;
        match names.as_slice() {
            [one] => Ok(QueueTarget::Embedded(one.clone())),
            [] => bail!("there is no queue yet: run `sluice init` or `sluice produce` first"),
            many => bail!(
                "there are several queues ({}): name one with --queue",
                many.join(", ")
            ),
        }
    }

    /// `--queue` if given, else every queue of the home.
    pub async fn queues(&self) -> Result<Vec<QueueTarget>> {
        if self.queue.is_some() {
            return Ok(vec![self.queue_target(None)?]);
        }
        Ok(self
            .home_queue_names()
            .await?
            .into_iter()
            .map(QueueTarget::Embedded)
            .collect())
    }

    /// The home's embedded queues when the queue backend is the embedded one (nothing on SQS:
    /// `sluice top` reads them every second, and SQS bills each read).
    pub async fn local_queues(&self) -> Result<Vec<QueueTarget>> {
        match self.queue_target(Some("x"))? {
            QueueTarget::Embedded(_) => self.queues().await,
            QueueTarget::Sqs(_) => Ok(Vec::new()),
        }
    }

    async fn home_queue_names(&self) -> Result<Vec<String>> {
        let (admin, _) = self
            .queue_admin(&QueueTarget::Embedded(String::new()))
            .await?;
        Ok(admin.list().await?)
    }

    /// Up to `limit` dead letters of `name`, each with why it failed: the reason a consumer of
    /// this home recorded, else the backend's.
    pub async fn dead_letters(
        &self,
        admin: &dyn QueueAdmin,
        name: &str,
        limit: usize,
    ) -> Result<Vec<(String, Option<String>)>> {
        let failures = sluice_core::queue::failures::read_failures(&self.home.failure_log());
        Ok(admin
            .dead_letters(name, limit)
            .await?
            .into_iter()
            .map(|m| {
                let reason = failures
                    .get(&m.message_id)
                    .map(|f| f.reason.clone())
                    .or(m.reason);
                (m.message_id, reason)
            })
            .collect())
    }

    /// What the bodies of the home's embedded queues take on disk: (files, bytes, directory);
    /// `None` for a queue elsewhere.
    pub fn queue_disk_usage(&self, target: &QueueTarget) -> Result<Option<(u64, u64, PathBuf)>> {
        if !matches!(target, QueueTarget::Embedded(_)) {
            return Ok(None);
        }
        let dir = self.home.queues()?.bodies_dir().to_path_buf();
        let (files, bytes) = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .fold((0u64, 0u64), |(n, b), m| (n + 1, b + m.len()))
            })
            .unwrap_or((0, 0));
        Ok(Some((files, bytes, dir)))
    }

    /// Object stores for the buckets S3 event notifications name (when the backends are AWS:
    /// an SQS queue may carry them).
    pub async fn notification_stores(
        &self,
    ) -> Option<Arc<dyn sluice_core::pipeline::consumer::BucketStores>> {
        if self.uses_aws() {
            Some(Arc::new(sluice_aws::s3::S3Buckets(
                self.aws().await.clone(),
            )))
        } else {
            None
        }
    }

    /// The store of an `s3://` source's bucket.
    pub async fn source_store(&self, bucket: &str) -> Result<Arc<dyn object_store::ObjectStore>> {
        Ok(sluice_aws::s3::s3_store(self.aws().await, bucket)?)
    }

    /// Prepares what `init` sets up beyond the queue, and describes each part for people:
    /// (the home, if the configuration uses one; the catalog; the lake, checked reachable and
    /// writable when it is a bucket).
    pub async fn init_parts(&self, database: &str) -> Result<(Option<PathBuf>, String, String)> {
        let home = if self.uses_aws() {
            None
        } else {
            self.ensure_home()?;
            Some(self.home.root.clone())
        };
        let catalog = match &self.catalog {
            CatalogTarget::Embedded => format!(
                "database {database} in {}",
                self.home.catalog_db().display()
            ),
            CatalogTarget::Glue(db) => format!("Glue database {db}"),
        };
        let lake = self.lake().await?;
        let lake = if lake.url.scheme() == "s3" {
            sluice_aws::s3::probe_lake(&lake).await?;
            format!("{} (bucket reachable and writable)", lake.url)
        } else {
            lake.url.to_string()
        };
        Ok((home, catalog, lake))
    }

    /// The Glue database, when the catalog is Glue (Athena reads tables through it).
    pub fn glue_database(&self) -> Option<&str> {
        match &self.catalog {
            CatalogTarget::Glue(db) => Some(db),
            CatalogTarget::Embedded => None,
        }
    }

    /// What an IAM policy is scoped to: the configured SQS queue, S3 lake and Glue database
    /// (whichever are AWS's), Athena's workgroup and results, and `sources` (`s3://` URLs).
    pub async fn iam_scope(
        &self,
        account: Option<&str>,
        sources: &[String],
    ) -> Result<sluice_aws::iam::Scope> {
        let split = |u: &str| -> Result<(String, String)> {
            let rest = u
                .strip_prefix("s3://")
                .with_context(|| format!("{u} is not an s3:// URL"))?;
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
        };
        let queue = self.queue_target(Some("sluice"))?;
        let account = account
            .map(str::to_string)
            .or_else(|| match &queue {
                QueueTarget::Sqs(QueueRef::Url(u)) => u
                    .trim_end_matches('/')
                    .rsplit('/')
                    .nth(1)
                    .map(str::to_string),
                _ => None,
            })
            .unwrap_or_else(|| "*".into());
        let region = self.aws().await.region();
        let partition = if region.starts_with("cn-") {
            "aws-cn"
        } else if region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        };
        let lake = match self.lake.as_deref() {
            Some(u) if u.starts_with("s3://") => Some(split(u)?),
            _ => None,
        };
        let athena = &self.aws_settings.athena;
        Ok(sluice_aws::iam::Scope {
            partition: partition.into(),
            region,
            account,
            queue: match &queue {
                QueueTarget::Sqs(r) => Some(r.name().to_string()),
                QueueTarget::Embedded(_) => None,
            },
            lake,
            database: self.glue_database().map(str::to_string),
            sources: sources.iter().map(|s| split(s)).collect::<Result<_>>()?,
            athena: Some((
                athena.workgroup.clone().unwrap_or_else(|| "primary".into()),
                athena.output_location.as_deref().map(split).transpose()?,
            )),
        })
    }

    /// Opens all three for a command on `table`.
    pub async fn open(&self, table: Option<&str>) -> Result<Backends> {
        let target = self.queue_target(table)?;
        let queue = self.queue(&target).await?;
        Ok(Backends {
            queue,
            catalog: self.catalog().await?,
            lake: self.lake().await?,
            database: self.catalog.database().to_string(),
        })
    }
}

/// The settings of a queue `init` or `queue create` makes on `target`.
impl crate::args::InitArgs {
    pub(crate) fn settings(&self, target: &QueueTarget) -> Result<QueueSettings> {
        let base = match target {
            QueueTarget::Embedded(_) => QueueSettings::embedded(),
            QueueTarget::Sqs(_) => QueueSettings::default(),
        };
        let max_message_bytes = match self.max_message_bytes {
            Some(n) if matches!(target, QueueTarget::Sqs(_)) && n as usize > MAX_MESSAGE_BYTES => {
                bail!("SQS takes messages of at most {MAX_MESSAGE_BYTES} bytes, not {n}")
            }
            Some(n) => n as usize,
            None => base.max_message_bytes,
        };
        Ok(QueueSettings {
            visibility_timeout: Duration::from_secs(self.visibility_timeout),
            max_receive_count: self.max_receive_count,
            max_message_bytes,
            ..base
        })
    }
}
