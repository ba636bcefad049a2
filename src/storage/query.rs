//! SQL building blocks the capability implementations share, written once against [`Tx`]:
//! existence checks, a WHERE clause with its page, IN-list placeholders and link tables
//! ([`Links`]).

use super::{Page, Row, SortOrder, StorageError, Tx, Val};
use std::collections::HashMap;

/// How many keys one IN list carries at most (SQLite binds at most 32766 parameters).
const IN_CHUNK: usize = 500;

/// The first row through `f`; `NotFound` when there is none.
pub(crate) fn one<T>(
    rows: Vec<Row>,
    f: impl Fn(&Row) -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    rows.first().map(f).ok_or(StorageError::NotFound)?
}

/// The number a `SELECT COUNT(*) ...` answers.
pub(crate) fn count(tx: &mut dyn Tx, sql: &str, params: &[Val]) -> Result<u64, StorageError> {
    let rows = tx.query(sql, params)?;
    let n = rows.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Whether `table` holds the row (`tenant`, `krn`).
pub(crate) fn exists(
    tx: &mut dyn Tx,
    table: &str,
    tenant: &str,
    krn: &str,
) -> Result<bool, StorageError> {
    Ok(!tx
        .query(
            &format!("SELECT 1 FROM {table} WHERE tenant = $1 AND krn = $2"),
            &[Val::from(tenant), Val::from(krn)],
        )?
        .is_empty())
}

/// `NotFound` unless `table` holds the row (`tenant`, `krn`).
pub(crate) fn require(
    tx: &mut dyn Tx,
    table: &str,
    tenant: &str,
    krn: &str,
) -> Result<(), StorageError> {
    if exists(tx, table, tenant, krn)? {
        Ok(())
    } else {
        Err(StorageError::NotFound)
    }
}

/// `NotFound` unless `table` holds every one of `krns`.
pub(crate) fn require_all(
    tx: &mut dyn Tx,
    table: &str,
    tenant: &str,
    krns: &[String],
) -> Result<(), StorageError> {
    for krn in krns {
        require(tx, table, tenant, krn)?;
    }
    Ok(())
}

/// A table relating two KRNs of a tenant, read from one side: (`tenant`, `from`, `to`).
#[derive(Clone, Copy)]
pub(crate) struct Links {
    pub(crate) table: &'static str,
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
}

impl Links {
    /// The same table read from the other side.
    pub(crate) const fn reversed(self) -> Links {
        Links {
            table: self.table,
            from: self.to,
            to: self.from,
        }
    }

    /// `sql` with `{t}`, `{f}` and `{o}` standing for the table and its two columns.
    fn sql(self, sql: &str) -> String {
        sql.replace("{t}", self.table)
            .replace("{f}", self.from)
            .replace("{o}", self.to)
    }

    /// Relate `from` to `to` (kept when it is there already).
    pub(crate) fn add(
        self,
        tx: &mut dyn Tx,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<(), StorageError> {
        let sql = "INSERT INTO {t} (tenant, {f}, {o}) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        self.pair(tx, sql, tenant, from, to)
    }

    /// Run `sql` ([`Links::sql`]) with the parameters (`tenant`, `from`, `to`).
    fn pair(
        self,
        tx: &mut dyn Tx,
        sql: &str,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<(), StorageError> {
        tx.execute(
            &self.sql(sql),
            &[Val::from(tenant), Val::from(from), Val::from(to)],
        )?;
        Ok(())
    }

    /// Relate `from` to each of `to`, each of which must be a row of `table`: `NotFound`
    /// otherwise.
    pub(crate) fn add_existing(
        self,
        tx: &mut dyn Tx,
        tenant: &str,
        from: &str,
        to: &[String],
        table: &str,
    ) -> Result<(), StorageError> {
        for t in to {
            require(tx, table, tenant, t)?;
            self.add(tx, tenant, from, t)?;
        }
        Ok(())
    }

    /// Remove the relation of `from` to `to`, if any.
    pub(crate) fn remove(
        self,
        tx: &mut dyn Tx,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<(), StorageError> {
        let sql = "DELETE FROM {t} WHERE tenant = $1 AND {f} = $2 AND {o} = $3";
        self.pair(tx, sql, tenant, from, to)
    }

    /// Remove every relation of `from`.
    pub(crate) fn clear(
        self,
        tx: &mut dyn Tx,
        tenant: &str,
        from: &str,
    ) -> Result<(), StorageError> {
        let sql = "DELETE FROM {t} WHERE tenant = $1 AND {f} = $2";
        tx.execute(&self.sql(sql), &[Val::from(tenant), Val::from(from)])?;
        Ok(())
    }

    /// What `from` is related to, sorted.
    pub(crate) fn targets(
        self,
        tx: &mut dyn Tx,
        tenant: &str,
        from: &str,
    ) -> Result<Vec<String>, StorageError> {
        let sql = "SELECT {o} FROM {t} WHERE tenant = $1 AND {f} = $2 ORDER BY {o}";
        tx.query(&self.sql(sql), &[Val::from(tenant), Val::from(from)])?
            .iter()
            .map(|r| r.string(0))
            .collect()
    }

    /// Per key of `from` (a page of them): what it is related to, sorted.
    pub(crate) fn targets_of_each(
        self,
        tx: &mut dyn Tx,
        tenant: &str,
        from: &[&str],
    ) -> Result<HashMap<String, Vec<String>>, StorageError> {
        let sql = self.sql("SELECT {f}, {o} FROM {t} WHERE tenant = $1 AND {f} IN (");
        values_by_key(tx, tenant, from, |marks| {
            format!("{sql}{marks}) ORDER BY {}", self.to)
        })
    }
}

/// `LIKE` pattern for a literal substring (escape `\`, `%`, `_`).
pub(crate) fn like_contains(s: &str) -> String {
    let mut out = String::from("%");
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The placeholders (`$4, $5, ...`) of `items`, each pushed onto `params`.
pub(crate) fn placeholders(params: &mut Vec<Val>, items: &[&str]) -> String {
    items
        .iter()
        .map(|item| {
            params.push(Val::from(*item));
            format!("${}", params.len())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per key of `keys`: the second column of the rows `sql` selects, as (key, value) pairs,
/// for the keys of its IN list. `sql` gets the list's placeholders; `$1` is the tenant.
pub(crate) fn values_by_key(
    tx: &mut dyn Tx,
    tenant: &str,
    keys: &[&str],
    sql: impl Fn(&str) -> String,
) -> Result<HashMap<String, Vec<String>>, StorageError> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for chunk in keys.chunks(IN_CHUNK) {
        let mut params = vec![Val::from(tenant)];
        let marks = placeholders(&mut params, chunk);
        for r in &tx.query(&sql(&marks), &params)? {
            out.entry(r.string(0)?).or_default().push(r.string(1)?);
        }
    }
    Ok(out)
}

/// A WHERE clause under construction, with its parameters.
pub(crate) struct Where {
    sql: String,
    params: Vec<Val>,
}

impl Where {
    /// `tenant = $1`.
    pub(crate) fn tenant(tenant: &str) -> Where {
        Where {
            sql: "tenant = $1".into(),
            params: vec![Val::from(tenant)],
        }
    }

    /// `AND <sql>`, where `$n` in `sql` stands for the parameter `v`.
    fn and(&mut self, sql: impl FnOnce(usize) -> String, v: Val) {
        self.params.push(v);
        let n = self.params.len();
        self.sql.push_str(" AND ");
        self.sql.push_str(&sql(n));
    }

    pub(crate) fn eq(&mut self, column: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.and(|n| format!("{column} = ${n}"), Val::from(v));
        }
    }

    pub(crate) fn flag(&mut self, column: &str, v: Option<bool>) {
        if let Some(v) = v {
            self.and(|n| format!("{column} = ${n}"), Val::Bool(v));
        }
    }

    pub(crate) fn is_null(&mut self, column: &str) {
        self.sql.push_str(&format!(" AND {column} IS NULL"));
    }

    /// The column holds `v` as a substring.
    pub(crate) fn contains(&mut self, column: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.and(
                |n| format!("{column} LIKE ${n} ESCAPE '\\'"),
                Val::from(like_contains(v)),
            );
        }
    }

    /// One of `columns` holds `v` as a substring.
    pub(crate) fn any_contains(&mut self, columns: &[&str], v: Option<&str>) {
        if let Some(v) = v {
            self.and(
                |n| {
                    let each: Vec<String> = columns
                        .iter()
                        .map(|c| format!("{c} LIKE ${n} ESCAPE '\\'"))
                        .collect();
                    format!("({})", each.join(" OR "))
                },
                Val::from(like_contains(v)),
            );
        }
    }

    /// The column starts with `v`.
    pub(crate) fn prefix(&mut self, column: &str, v: Option<&str>) {
        if let Some(v) = v {
            // like_contains gives %v%: keep the trailing % only.
            let pattern = like_contains(v).trim_start_matches('%').to_string();
            self.and(
                |n| format!("{column} LIKE ${n} ESCAPE '\\'"),
                Val::from(pattern),
            );
        }
    }

    /// `krn` is one of the rows `v` is related to through `links`.
    pub(crate) fn linked(&mut self, links: Links, v: Option<&str>) {
        if let Some(v) = v {
            let Links { table, from, to } = links;
            self.and(
                |n| {
                    format!("krn IN (SELECT {to} FROM {table} WHERE tenant = $1 AND {from} = ${n})")
                },
                Val::from(v),
            );
        }
    }

    /// `SELECT cols FROM table WHERE ... ORDER BY ... LIMIT/OFFSET` and the total count.
    pub(crate) fn page(
        &self,
        tx: &mut dyn Tx,
        table: &str,
        cols: &str,
        order_by: &str,
        order: SortOrder,
        page: Page,
    ) -> Result<(Vec<Row>, u64), StorageError> {
        let total = count(
            tx,
            &format!("SELECT COUNT(*) FROM {table} WHERE {}", self.sql),
            &self.params,
        )?;
        let dir = match order {
            SortOrder::Asc => "ASC",
            SortOrder::Desc => "DESC",
        };
        let mut p = self.params.clone();
        p.push(Val::I64(i64::from(page.size)));
        p.push(Val::I64(page.offset()));
        let rows = tx.query(
            &format!(
                "SELECT {cols} FROM {table} WHERE {} ORDER BY {order_by} {dir}, krn {dir} LIMIT ${} OFFSET ${}",
                self.sql,
                p.len() - 1,
                p.len()
            ),
            &p,
        )?;
        Ok((rows, total))
    }

    /// [`Where::page`], each row read by `record`.
    #[allow(clippy::too_many_arguments)] // one query: table, columns, order, page, row reader
    pub(crate) fn page_of<T>(
        &self,
        tx: &mut dyn Tx,
        table: &str,
        cols: &str,
        order_by: &str,
        order: SortOrder,
        page: Page,
        record: impl Fn(&Row) -> Result<T, StorageError>,
    ) -> Result<(Vec<T>, u64), StorageError> {
        let (rows, total) = self.page(tx, table, cols, order_by, order, page)?;
        Ok((rows.iter().map(record).collect::<Result<_, _>>()?, total))
    }
}

/// A column name from a whitelist (never from input directly).
pub(crate) fn sort_column<'a>(
    requested: &str,
    allowed: &[(&str, &'a str)],
    default: &'a str,
) -> &'a str {
    allowed
        .iter()
        .find(|(k, _)| *k == requested)
        .map_or(default, |(_, c)| c)
}

/// `INSERT INTO table (cols) VALUES ($1, ..., $n)`, one value a column.
pub(crate) fn insert_row(
    tx: &mut dyn Tx,
    table: &str,
    cols: &str,
    values: &[Val],
) -> Result<(), StorageError> {
    let marks: Vec<String> = (1..=values.len()).map(|n| format!("${n}")).collect();
    tx.execute(
        &format!("INSERT INTO {table} ({cols}) VALUES ({})", marks.join(", ")),
        values,
    )?;
    Ok(())
}

/// Run each of `statements` with the parameters (`tenant`, `krn`).
pub(crate) fn run_each(
    tx: &mut dyn Tx,
    statements: &[&str],
    tenant: &str,
    krn: &str,
) -> Result<(), StorageError> {
    for sql in statements {
        tx.execute(sql, &[Val::from(tenant), Val::from(krn)])?;
    }
    Ok(())
}
