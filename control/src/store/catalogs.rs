//! Iceberg SQL catalogs: the tables PyIceberg's `SqlCatalog` (and Java's JDBC catalog) keep in
//! a database of their own, `iceberg_tables`. Read-only, one query: where a table's current
//! metadata file is.

use sqlx::Connection;

use super::*;

/// The current metadata file of `table` (`namespace.table`, the namespace possibly dotted)
/// in the SQL catalog `catalog_name` at `uri` (an sqlx URL: `sqlite:///path/catalog.db`,
/// `postgres://…`); `None` when the catalog has no such table.
pub async fn iceberg_metadata_location(uri: &str, catalog_name: &str, table: &str) -> Result<Option<String>> {
    sqlx::any::install_default_drivers();
    let (namespace, name) = table.rsplit_once('.').ok_or_else(|| Error::Config(format!("{table:?} is not namespace.table")))?;
    let mut conn = sqlx::AnyConnection::connect(uri).await?;
    let row = sqlx::query("SELECT metadata_location FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3")
        .bind(catalog_name)
        .bind(namespace)
        .bind(name)
        .fetch_optional(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(match row {
        Some(r) => r.try_get::<Option<String>, _>(0)?,
        None => None,
    })
}
