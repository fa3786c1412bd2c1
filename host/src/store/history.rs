//! The reads both stores answer alike: runs, one run, incidents, each with the host it
//! belongs to. This host's SQLite store ([`LocalHistory`]) answers for itself; the fleet
//! controller's PostgreSQL store ([`PgStore`]) answers for every agent and filters by
//! host. The HTTP API reads through [`History`], so a run reads the same whichever
//! store holds it.
//!
//! Only reads are shared. Each store keeps its own write paths, because they differ in
//! kind: the SQLite store is a host's authority (locks, recovery, the audit chain), while
//! the PostgreSQL store is a read model fed by the agents' events.

use std::future::Future;

use serde::Serialize;
use thiserror::Error;

use super::incidents::Incident;
use super::postgres::{PgStore, PgStoreError};
use super::{RunDetail, RunRow, Store, StoreError};

/// A run as a list shows it: the host it ran on and its row.
#[derive(Debug, Clone, Serialize)]
pub struct HostRun {
    pub host: String,
    #[serde(flatten)]
    pub run: RunRow,
}

/// One run with everything stored about it, and the host it ran on.
#[derive(Debug, Clone, Serialize)]
pub struct HostRunDetail {
    pub host: String,
    #[serde(flatten)]
    pub run: RunDetail,
}

/// An incident and the host whose runbook it is about.
#[derive(Debug, Clone, Serialize)]
pub struct HostIncident {
    pub host: String,
    #[serde(flatten)]
    pub incident: Incident,
}

/// Which runs to list, newest first.
#[derive(Debug, Clone, Copy)]
pub struct RunFilter<'a> {
    pub host: Option<&'a str>,
    pub runbook: Option<&'a str>,
    pub limit: usize,
}

/// Why a read failed, from whichever store was read.
#[derive(Debug, Error)]
pub enum HistoryError {
    #[error(transparent)]
    Local(#[from] StoreError),
    #[error(transparent)]
    Fleet(#[from] PgStoreError),
}

/// What the API reads about runs and incidents, from either store.
pub trait History: Sync {
    /// Runs, newest first.
    fn runs(
        &self,
        filter: RunFilter<'_>,
    ) -> impl Future<Output = Result<Vec<HostRun>, HistoryError>> + Send;

    /// One run by id or unique id prefix.
    fn run(
        &self,
        id_or_prefix: &str,
    ) -> impl Future<Output = Result<Option<HostRunDetail>, HistoryError>> + Send;

    /// Incidents not resolved (every one with `include_resolved`), newest first.
    fn incidents(
        &self,
        host: Option<&str>,
        include_resolved: bool,
    ) -> impl Future<Output = Result<Vec<HostIncident>, HistoryError>> + Send;
}

/// This host's store, read as one host of a fleet: every row is this host's, and a
/// filter naming another host finds nothing.
pub struct LocalHistory<'a> {
    pub store: &'a Store,
    pub host: String,
}

impl<'a> LocalHistory<'a> {
    /// This host's store, under the host's name.
    pub fn here(store: &'a Store) -> Self {
        LocalHistory {
            store,
            host: sysinfo::System::host_name().unwrap_or_default(),
        }
    }

    fn is_mine(&self, host: Option<&str>) -> bool {
        host.is_none_or(|h| h == self.host.as_str())
    }
}

impl History for LocalHistory<'_> {
    async fn runs(&self, filter: RunFilter<'_>) -> Result<Vec<HostRun>, HistoryError> {
        if !self.is_mine(filter.host) {
            return Ok(Vec::new());
        }
        let rows = self.store.history(filter.runbook, filter.limit)?;
        Ok(rows
            .into_iter()
            .map(|run| HostRun {
                host: self.host.clone(),
                run,
            })
            .collect())
    }

    async fn run(&self, id_or_prefix: &str) -> Result<Option<HostRunDetail>, HistoryError> {
        Ok(self.store.run(id_or_prefix)?.map(|run| HostRunDetail {
            host: self.host.clone(),
            run,
        }))
    }

    async fn incidents(
        &self,
        host: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<HostIncident>, HistoryError> {
        if !self.is_mine(host) {
            return Ok(Vec::new());
        }
        let list = self.store.incidents(include_resolved, 0)?;
        Ok(list
            .into_iter()
            .map(|incident| HostIncident {
                host: self.host.clone(),
                incident,
            })
            .collect())
    }
}

impl History for PgStore {
    async fn runs(&self, filter: RunFilter<'_>) -> Result<Vec<HostRun>, HistoryError> {
        Ok(self
            .history(filter.host, filter.runbook, filter.limit)
            .await?)
    }

    async fn run(&self, id_or_prefix: &str) -> Result<Option<HostRunDetail>, HistoryError> {
        Ok(PgStore::run(self, id_or_prefix)
            .await?
            .map(|(host, run)| HostRunDetail { host, run }))
    }

    async fn incidents(
        &self,
        host: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<HostIncident>, HistoryError> {
        Ok(PgStore::incidents(self, host, include_resolved).await?)
    }
}
