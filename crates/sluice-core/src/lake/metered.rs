//! An object store that counts its requests in a [`Meter`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use crate::metrics::{C, Meter};

/// An object store that counts its requests in a [`Meter`].
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    meter: Arc<Meter>,
}

impl MeteredStore {
    /// `inner`, counting its requests in `meter`.
    pub fn new(inner: Arc<dyn ObjectStore>, meter: Arc<Meter>) -> Self {
        MeteredStore { inner, meter }
    }
}

impl fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
    meter: Arc<Meter>,
}

#[async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.meter.count(C::StoreMultipart, 1);
        self.meter
            .count(C::StoreBytesPut, data.content_length() as u64);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.meter.count(C::StoreMultipart, 1);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.meter.count(C::StoreMultipart, 1);
        self.inner.abort().await
    }
}

/// Counts one LIST request per 1,000 keys of a listing stream (the first when it starts).
fn count_list(
    s: BoxStream<'static, object_store::Result<ObjectMeta>>,
    meter: Arc<Meter>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    meter.count(C::StoreList, 1);
    let mut n = 0u64;
    s.inspect(move |_| {
        n += 1;
        if n.is_multiple_of(1000) {
            meter.count(C::StoreList, 1);
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.meter.count(C::StorePut, 1);
        self.meter
            .count(C::StoreBytesPut, payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.meter.count(C::StoreMultipart, 1);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(MeteredUpload {
            inner,
            meter: self.meter.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.meter.count(C::StoreGet, 1);
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let meter = self.meter.clone();
        self.inner.delete_stream(
            locations
                .inspect(move |_| meter.count(C::StoreDelete, 1))
                .boxed(),
        )
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        count_list(self.inner.list(prefix), self.meter.clone())
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        count_list(
            self.inner.list_with_offset(prefix, offset),
            self.meter.clone(),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.meter.count(C::StoreList, 1);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.meter.count(C::StoreCopy, 1);
        self.inner.copy_opts(from, to, options).await
    }
}
