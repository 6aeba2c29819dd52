//! [`Conn`]: one client connection with its prepared statements, and the SQL of the tables.

use std::collections::HashMap;
use std::ops::Bound;

use msite_core::store::{KeyRange, Keyspace, Result};
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use crate::error::PgResultExt;
use crate::settings::ConnSettings;

/// Prepared statements kept per connection (every shape the store runs fits).
const MAX_STATEMENTS: usize = 256;

/// The table of keyspace `ks`.
pub(crate) fn table(ks: Keyspace) -> &'static str {
    match ks {
        Keyspace::Meta => "kv_meta",
        Keyspace::Oplog => "kv_oplog",
        Keyspace::Epochs => "kv_epochs",
        Keyspace::Peers => "kv_peers",
        Keyspace::State => "kv_state",
        Keyspace::Blobs => "kv_blobs",
    }
}

/// A client connection and the statements prepared on it, by SQL text: each statement is
/// parsed once per connection, so a query costs one round trip.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    /// Connect with `settings`.
    pub(crate) fn connect(settings: &ConnSettings) -> Result<Conn> {
        let client = settings.client_config().connect(NoTls).p2e()?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }

    /// The statement for `sql`, prepared on first use.
    pub(crate) fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let st = self.client.prepare(sql).p2e()?;
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// Run the statement for `sql`; its rows.
    pub(crate) fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let st = self.statement(sql)?;
        self.client.query(&st, params).p2e()
    }

    /// Run the statement for `sql`; the number of rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let st = self.statement(sql)?;
        self.client.execute(&st, params).p2e()
    }

    /// The value under `key` in `ks`.
    pub(crate) fn get(&mut self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let sql = format!("SELECT v FROM {} WHERE k = $1", table(ks));
        let rows = self.query(&sql, &[&key])?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// At most `limit` pairs of `ks` between `start` and `end`, in key order (`desc`:
    /// largest first).
    pub(crate) fn range(
        &mut self,
        ks: Keyspace,
        start: &Bound<Vec<u8>>,
        end: &Bound<Vec<u8>>,
        desc: bool,
        limit: i64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut conds = Vec::with_capacity(2);
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(3);
        for (b, incl, excl) in [(start, ">=", ">"), (end, "<=", "<")] {
            let (op, v) = match b {
                Bound::Included(v) => (incl, v),
                Bound::Excluded(v) => (excl, v),
                Bound::Unbounded => continue,
            };
            params.push(v);
            conds.push(format!("k {op} ${}", params.len()));
        }
        params.push(&limit);
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let order = if desc { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT k, v FROM {}{filter} ORDER BY k {order} LIMIT ${}",
            table(ks),
            params.len()
        );
        let rows = self.query(&sql, &params)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The pair with the largest key in `range`: one `ORDER BY k DESC LIMIT 1` query, which
    /// the server answers by seeking to the end of the range in the primary-key index.
    pub(crate) fn last(
        &mut self,
        ks: Keyspace,
        range: &KeyRange,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if range.is_empty() {
            return Ok(None);
        }
        Ok(self.range(ks, &range.start, &range.end, true, 1)?.pop())
    }
}
