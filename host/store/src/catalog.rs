use hephaestus_core::Timestamp;
use hephaestus_core::catalog::{Price, Product, Recurring};
use hephaestus_core::money::Money;

use crate::{
    Result, Store, StoreError, Tx, currency_of, metadata_json, metadata_of, with_read, with_tx,
};

#[derive(sqlx::FromRow)]
struct ProductRow {
    id: String,
    name: String,
    description: Option<String>,
    active: bool,
    metadata: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ProductRow> for Product {
    type Error = StoreError;
    fn try_from(r: ProductRow) -> Result<Self> {
        Ok(Product {
            metadata: metadata_of(&r.metadata, &r.id)?,
            id: r.id,
            name: r.name,
            description: r.description,
            active: r.active,
            created_at: Timestamp::from_micros(r.created_at),
            updated_at: Timestamp::from_micros(r.updated_at),
        })
    }
}

pub async fn insert_product(tx: &mut Tx, p: &Product) -> Result<()> {
    let metadata = metadata_json(&p.metadata)?;
    with_tx!(tx, |c| sqlx::query(
        "INSERT INTO products (id, name, description, active, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    )
    .bind(&p.id)
    .bind(&p.name)
    .bind(&p.description)
    .bind(p.active)
    .bind(&metadata)
    .bind(p.created_at.as_micros())
    .bind(p.updated_at.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

const PRODUCT_COLUMNS: &str = "id, name, description, active, metadata, created_at, updated_at";

pub async fn get_product(store: &Store, id: &str) -> Result<Option<Product>> {
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1");
    let row: Option<ProductRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(e)
        .await)?;
    row.map(Product::try_from).transpose()
}

/// Products newest first, after `starting_after`, optionally only active or inactive ones.
/// The newest product with this name, compared case-insensitively.
pub async fn find_product_by_name(store: &Store, name: &str) -> Result<Option<Product>> {
    let sql = format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE LOWER(name) = LOWER($1) ORDER BY id DESC LIMIT 1"
    );
    let row: Option<ProductRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(e)
        .await)?;
    row.map(Product::try_from).transpose()
}

pub async fn list_products(
    store: &Store,
    limit: i64,
    starting_after: Option<&str>,
    active: Option<bool>,
) -> Result<Vec<Product>> {
    let sql = format!(
        "SELECT {PRODUCT_COLUMNS} FROM products
          WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR active = $2)
          ORDER BY id DESC LIMIT $3"
    );
    let rows: Vec<ProductRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(starting_after)
        .bind(active)
        .bind(limit)
        .fetch_all(e)
        .await)?;
    rows.into_iter().map(Product::try_from).collect()
}

#[derive(sqlx::FromRow)]
struct PriceRow {
    id: String,
    product_id: String,
    currency: String,
    unit_amount_minor: i64,
    interval: Option<String>,
    interval_count: Option<i64>,
    trial_days: Option<i64>,
    active: bool,
    replaces: Option<String>,
    replaced_by: Option<String>,
    metadata: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<PriceRow> for Price {
    type Error = StoreError;
    fn try_from(r: PriceRow) -> Result<Self> {
        let corrupt = |e: String| StoreError::Corrupt(format!("price {}: {e}", r.id));
        let currency = currency_of(&r.currency, &r.id)?;
        let recurring = match (&r.interval, r.interval_count) {
            (Some(i), Some(n)) => Some(Recurring {
                interval: i.parse().map_err(corrupt)?,
                count: n,
            }),
            _ => None,
        };
        Ok(Price {
            metadata: metadata_of(&r.metadata, &r.id)?,
            unit_amount: Money {
                minor: r.unit_amount_minor,
                currency,
            },
            recurring,
            id: r.id,
            product_id: r.product_id,
            trial_days: r.trial_days,
            active: r.active,
            replaces: r.replaces,
            replaced_by: r.replaced_by,
            created_at: Timestamp::from_micros(r.created_at),
            updated_at: Timestamp::from_micros(r.updated_at),
        })
    }
}

const PRICE_COLUMNS: &str = "id, product_id, currency, unit_amount_minor, interval, interval_count, \
     trial_days, active, replaces, replaced_by, metadata, created_at, updated_at";
/// [`PRICE_COLUMNS`] of a price aliased `p`, for joins.
const PRICE_COLUMNS_OF_P: &str = "p.id, p.product_id, p.currency, p.unit_amount_minor, p.interval, \
     p.interval_count, p.trial_days, p.active, p.replaces, p.replaced_by, p.metadata, p.created_at, \
     p.updated_at";

pub async fn insert_price(tx: &mut Tx, p: &Price) -> Result<()> {
    let metadata = metadata_json(&p.metadata)?;
    with_tx!(tx, |c| sqlx::query(
        "INSERT INTO prices (id, product_id, currency, unit_amount_minor, type, interval,
             interval_count, trial_days, active, replaces, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    )
    .bind(&p.id)
    .bind(&p.product_id)
    .bind(p.unit_amount.currency.code())
    .bind(p.unit_amount.minor)
    .bind(p.kind())
    .bind(p.recurring.map(|r| r.interval.as_str()))
    .bind(p.recurring.map(|r| r.count))
    .bind(p.trial_days)
    .bind(p.active)
    .bind(&p.replaces)
    .bind(&metadata)
    .bind(p.created_at.as_micros())
    .bind(p.updated_at.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn get_price(store: &Store, id: &str) -> Result<Option<Price>> {
    let sql = format!("SELECT {PRICE_COLUMNS} FROM prices WHERE id = $1");
    let row: Option<PriceRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(e)
        .await)?;
    row.map(Price::try_from).transpose()
}

/// A price and a product read together, the product's columns prefixed `product_`.
#[derive(sqlx::FromRow)]
struct PriceProductRow {
    #[sqlx(flatten)]
    price: PriceRow,
    product_name: String,
    product_description: Option<String>,
    product_active: bool,
    product_metadata: String,
    product_created_at: i64,
    product_updated_at: i64,
}

/// The price and its product, in one statement (quotes read both on every request).
pub async fn get_price_with_product(store: &Store, id: &str) -> Result<Option<(Price, Product)>> {
    let sql = format!(
        "SELECT {PRICE_COLUMNS_OF_P}, r.name AS product_name,
                r.description AS product_description, r.active AS product_active,
                r.metadata AS product_metadata, r.created_at AS product_created_at,
                r.updated_at AS product_updated_at
           FROM prices p JOIN products r ON r.id = p.product_id
          WHERE p.id = $1"
    );
    let row: Option<PriceProductRow> =
        with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(e)
            .await)?;
    let Some(row) = row else { return Ok(None) };
    let product = Product::try_from(ProductRow {
        id: row.price.product_id.clone(),
        name: row.product_name,
        description: row.product_description,
        active: row.product_active,
        metadata: row.product_metadata,
        created_at: row.product_created_at,
        updated_at: row.product_updated_at,
    })?;
    Ok(Some((Price::try_from(row.price)?, product)))
}

/// A price, read in `tx` (by code that has no store at hand, such as a webhook's handler).
pub async fn get_price_in(tx: &mut Tx, id: &str) -> Result<Option<Price>> {
    let sql = format!("SELECT {PRICE_COLUMNS} FROM prices WHERE id = $1");
    let row: Option<PriceRow> = with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(c)
        .await)?;
    row.map(Price::try_from).transpose()
}

/// Retires `old` in favour of `new`: only an active price not yet replaced can be, so two
/// concurrent replacements cannot both win. Returns whether it was replaced.
pub async fn replace_price(tx: &mut Tx, old: &str, new: &str, now: Timestamp) -> Result<bool> {
    let n = with_tx!(tx, |c| sqlx::query(
        "UPDATE prices SET active = FALSE, replaced_by = $2, updated_at = $3
          WHERE id = $1 AND replaced_by IS NULL"
    )
    .bind(old)
    .bind(new)
    .bind(now.as_micros())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Sets whether a price can be used for new sales. Returns the price, or `None` if missing.
pub async fn set_price_active(
    tx: &mut Tx,
    id: &str,
    active: bool,
    now: Timestamp,
) -> Result<Option<Price>> {
    let sql = format!(
        "UPDATE prices SET active = $2, updated_at = $3 WHERE id = $1 RETURNING {PRICE_COLUMNS}"
    );
    let row: Option<PriceRow> = with_tx!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(active)
        .bind(now.as_micros())
        .fetch_optional(c)
        .await)?;
    row.map(Price::try_from).transpose()
}

/// What a price list asks for. Lists run newest first.
#[derive(Debug, Clone, Default)]
pub struct PriceQuery {
    pub limit: i64,
    pub starting_after: Option<String>,
    pub product_id: Option<String>,
    pub active: Option<bool>,
    /// `one_time` or `recurring`.
    pub kind: Option<&'static str>,
}

pub async fn list_prices(store: &Store, q: &PriceQuery) -> Result<Vec<Price>> {
    let sql = format!(
        "SELECT {PRICE_COLUMNS} FROM prices
          WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR product_id = $2)
            AND ($3 IS NULL OR active = $3) AND ($4 IS NULL OR type = $4)
          ORDER BY id DESC LIMIT $5"
    );
    let rows: Vec<PriceRow> = with_read!(store, |e| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&q.starting_after)
        .bind(&q.product_id)
        .bind(q.active)
        .bind(q.kind)
        .bind(q.limit)
        .fetch_all(e)
        .await)?;
    rows.into_iter().map(Price::try_from).collect()
}
