//! The `retail` profile: a retailer's customers and what they do.
//!
//! At `--scale N`: N individuals (+1% duplicate and 0.2% NULL keys), about 0.36N loyalty
//! accounts, 10N orders with about 2 lines each (20N), 12N email events, 8N web visits, and
//! N/50 products (200 to 20,000); at N = 1,000,000 about 51M rows. Orders, email events and
//! web visits pick their individual with a Zipf-like skew (exponent 1 and 0.9): the top 1% of
//! individuals own about half of the orders and a third of the events, many own none.
//! An order is placed after its buyer's signup, so recent signups have fewer orders.
//!
//! Dirt: duplicate primary keys (0.3–1% of rows, usually a stale copy with other values),
//! NULL primary keys (0.1–0.6%), NULL foreign keys (0.2–1.5%; a quarter of web visits are
//! anonymous) and dangling ones (0.2–1%), odd spellings (`us`, `Completed`, `GMAIL.COM`).

use std::ops::Range;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::random::{
    AS_OF_DAY, AS_OF_MICROS, MICROS_PER_DAY, Skewed, cents, chance, day_within, exponential, instant_within_days, normal, pick, stream_id, stream_rng,
    unit_hash,
};
use super::writer::{FieldType as T, PartWriter, Relationship, Table};
use super::{GenContext, Task, Tenant, part_count, part_range, run_tasks};

/// Base rows (individuals, orders, events) per part file.
const ROWS_PER_PART: u64 = 1 << 20;

const ORDERS_PER_INDIVIDUAL: u64 = 10;
const EMAIL_EVENTS_PER_INDIVIDUAL: u64 = 12;
const WEB_VISITS_PER_INDIVIDUAL: u64 = 8;

const COUNTRIES: &[(&str, u32)] = &[
    ("US", 380),
    ("CA", 80),
    ("GB", 100),
    ("DE", 80),
    ("FR", 70),
    ("ES", 40),
    ("IT", 40),
    ("NL", 30),
    ("AU", 40),
    ("BR", 40),
    ("MX", 30),
    ("JP", 30),
    ("us", 10),
    ("", 30), // NULL
];
const GENDERS: &[(&str, u32)] = &[("F", 48), ("M", 46), ("X", 2), ("", 4)];
const EMAIL_DOMAINS: &[(&str, u32)] = &[
    ("gmail.com", 350),
    ("yahoo.com", 100),
    ("hotmail.com", 80),
    ("outlook.com", 100),
    ("icloud.com", 70),
    ("aol.com", 20),
    ("proton.me", 20),
    ("GMAIL.COM", 10),
    ("example.org", 50),
    ("company.com", 200),
];
const CATEGORIES: &[(&str, u32, f64, &[&str])] = &[
    // category, weight, median price, product nouns
    ("electronics", 14, 120.0, &["Headphones", "Charger", "Speaker", "Tablet", "Camera", "Monitor"]),
    ("apparel", 22, 35.0, &["T-Shirt", "Jeans", "Jacket", "Dress", "Sweater", "Socks"]),
    ("home", 14, 40.0, &["Lamp", "Pillow", "Rug", "Mug", "Blanket", "Vase"]),
    ("beauty", 10, 20.0, &["Serum", "Lipstick", "Shampoo", "Lotion", "Perfume"]),
    ("sports", 8, 45.0, &["Yoga Mat", "Dumbbell", "Bottle", "Racket", "Helmet"]),
    ("toys", 7, 25.0, &["Puzzle", "Robot", "Doll", "Blocks", "Kite"]),
    ("grocery", 12, 8.0, &["Coffee", "Tea", "Olive Oil", "Chocolate", "Pasta"]),
    ("books", 6, 15.0, &["Novel", "Cookbook", "Atlas", "Guide", "Comic"]),
    ("garden", 4, 30.0, &["Hose", "Planter", "Shears", "Seeds"]),
    ("shoes", 3, 70.0, &["Sneakers", "Boots", "Sandals", "Loafers"]),
];
const BRANDS: &[&str] = &[
    "Acme",
    "Northwind",
    "Contoso",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Tyrell",
    "Wonka",
    "Cyberdyne",
    "Aperture",
    "Gringotts",
    "Oceanic",
    "Duff",
    "Monarch",
    "Zenith",
];
const CHANNELS: &[(&str, u32)] = &[("web", 50), ("app", 30), ("store", 15), ("phone", 5)];
const STATUSES: &[(&str, u32)] = &[("completed", 820), ("pending", 40), ("cancelled", 60), ("returned", 75), ("Completed", 5)];
const EMAIL_KINDS: &[(&str, u32)] = &[("sent", 580), ("open", 300), ("click", 100), ("Open", 2)];
/// Share of individuals whose address bounces, and the share of their events that bounce.
const BOUNCING_INDIVIDUALS: f64 = 0.08;
const BOUNCE_RATE: f64 = 0.25;
/// Share of individuals who unsubscribe at some point, and the share of their events that are
/// unsubscribes.
const UNSUBSCRIBING_INDIVIDUALS: f64 = 0.12;
const UNSUBSCRIBE_RATE: f64 = 0.02;
/// Salts of per-individual traits (see [`unit_hash`]).
const TRAIT_SIGNUP: u64 = 1;
const TRAIT_BOUNCES: u64 = 2;
const TRAIT_UNSUBSCRIBES: u64 = 3;
const DEVICES: &[(&str, u32)] = &[("mobile", 58), ("desktop", 35), ("tablet", 7)];
const PAGES: &[(&str, u32)] =
    &[("/", 20), ("/search", 10), ("/product/", 40), ("/category/", 14), ("/cart", 7), ("/checkout", 4), ("/sale", 4), ("/account", 1)];

fn tables() -> Vec<Table> {
    vec![
        Table::new(
            "individual",
            "individual_id",
            &[
                ("individual_id", T::String),
                ("email", T::String),
                ("gender", T::String),
                ("country", T::String),
                ("birth_date", T::Date),
                ("signup_at", T::Timestamp),
                ("email_opt_in", T::Bool),
            ],
        ),
        Table::new(
            "order",
            "order_id",
            &[
                ("order_id", T::Int),
                ("individual_id", T::String),
                ("ordered_at", T::Timestamp),
                ("amount", T::Float),
                ("channel", T::String),
                ("status", T::String),
            ],
        ),
        Table::new(
            "order_line",
            "order_line_id",
            &[("order_line_id", T::Int), ("order_id", T::Int), ("product_id", T::String), ("quantity", T::Int), ("unit_price", T::Float)],
        ),
        Table::new(
            "product",
            "product_id",
            &[
                ("product_id", T::String),
                ("name", T::String),
                ("category", T::String),
                ("brand", T::String),
                ("price", T::Float),
                ("launched_on", T::Date),
                ("is_active", T::Bool),
            ],
        ),
        Table::new(
            "email_event",
            "email_event_id",
            &[("email_event_id", T::Int), ("individual_id", T::String), ("kind", T::String), ("at", T::Timestamp), ("campaign", T::String)],
        ),
        Table::new(
            "web_visit",
            "web_visit_id",
            &[
                ("web_visit_id", T::Int),
                ("individual_id", T::String),
                ("page", T::String),
                ("product_id", T::String),
                ("visited_at", T::Timestamp),
                ("duration_s", T::Int),
                ("device", T::String),
            ],
        ),
        Table::new(
            "loyalty_account",
            "loyalty_account_id",
            &[("loyalty_account_id", T::String), ("individual_id", T::String), ("tier", T::String), ("points", T::Int), ("joined_on", T::Date)],
        ),
    ]
}

fn relationships() -> Vec<Relationship> {
    vec![
        Relationship::new("order_individual", "order", "individual_id", "individual", "individual_id"),
        Relationship::new("order_line_order", "order_line", "order_id", "order", "order_id"),
        Relationship::new("order_line_product", "order_line", "product_id", "product", "product_id"),
        Relationship::new("email_event_individual", "email_event", "individual_id", "individual", "individual_id"),
        Relationship::new("web_visit_individual", "web_visit", "individual_id", "individual", "individual_id"),
        Relationship::new("web_visit_product", "web_visit", "product_id", "product", "product_id"),
        Relationship::new("loyalty_account_individual", "loyalty_account", "individual_id", "individual", "individual_id"),
    ]
}

/// Stream kinds, so every part has a generator of its own.
const STREAM_PRODUCTS: u32 = 1;
const STREAM_INDIVIDUALS: u32 = 2;
const STREAM_ORDERS: u32 = 3;
const STREAM_EMAIL: u32 = 4;
const STREAM_WEB: u32 = 5;

/// What the order and visit generators need to know about products.
#[derive(Debug, Clone, Copy)]
struct ProductInfo {
    price: f64,
}

/// Makes the retail tenant under `ctx.out`.
pub(super) fn generate(ctx: &GenContext) -> anyhow::Result<Tenant> {
    let tables = tables();
    ctx.prepare_tables(&tables)?;
    let table = |name: &str| tables.iter().find(|t| t.name == name).cloned().expect("retail table names are fixed");
    let (individual_t, order_t, line_t, product_t, email_t, web_t, loyalty_t) =
        (table("individual"), table("order"), table("order_line"), table("product"), table("email_event"), table("web_visit"), table("loyalty_account"));

    let n = ctx.scale;
    let product_count = (n / 50).clamp(200, 20_000);
    let orders = n * ORDERS_PER_INDIVIDUAL;
    let email_events = n * EMAIL_EVENTS_PER_INDIVIDUAL;
    let web_visits = n * WEB_VISITS_PER_INDIVIDUAL;

    // Products first (few, written on this thread): the lines need their prices.
    let (product_infos, product_rows) = write_products(ctx, &product_t, product_count, &indicatif::ProgressBar::hidden())?;
    let mut rows = std::collections::BTreeMap::from([(product_t.name.clone(), product_rows)]);

    // Buyers and readers are skewed differently: the heaviest buyers are not the heaviest readers.
    let people = Skewed::new(n, 1.0, 0.1, 1);
    let readers = Skewed::new(n, 0.9, 0.3, 2);
    let popular = Skewed::new(product_count, 0.8, 0.2, 3);
    let mut tasks: Vec<Task<'_>> = Vec::new();
    for part in 0..part_count(n, ROWS_PER_PART) {
        let range = part_range(n, ROWS_PER_PART, part);
        let (it, lt) = (&individual_t, &loyalty_t);
        tasks.push(Box::new(move |progress| write_individuals(ctx, it, lt, part, range, progress)));
    }
    for part in 0..part_count(orders, ROWS_PER_PART) {
        let range = part_range(orders, ROWS_PER_PART, part);
        let (ot, lt, people, popular, infos) = (&order_t, &line_t, &people, &popular, &product_infos);
        tasks.push(Box::new(move |progress| write_orders(ctx, ot, lt, part, range, orders, people, popular, infos, progress)));
    }
    for part in 0..part_count(email_events, ROWS_PER_PART) {
        let range = part_range(email_events, ROWS_PER_PART, part);
        let (et, readers) = (&email_t, &readers);
        tasks.push(Box::new(move |progress| write_email_events(ctx, et, part, range, readers, progress)));
    }
    for part in 0..part_count(web_visits, ROWS_PER_PART) {
        let range = part_range(web_visits, ROWS_PER_PART, part);
        let (wt, readers, popular) = (&web_t, &readers, &popular);
        tasks.push(Box::new(move |progress| write_web_visits(ctx, wt, part, range, readers, popular, product_count, progress)));
    }
    // Order parts are the slowest: put them first so the tail is short.
    tasks.rotate_left(part_count(n, ROWS_PER_PART));
    let expected = n + n * 36 / 100 + orders * 25 / 10 + email_events + web_visits;
    for (object, count) in run_tasks("retail", tasks, expected)? {
        *rows.entry(object).or_default() += count;
    }

    Ok(Tenant { tables, relationships: relationships(), guardrails: Some(json!({"max_hops": 4})), segments: segments(), rows })
}

fn individual_key(w: &mut PartWriter, column: usize, index: u64) {
    w.string_fmt(column, format_args!("I{index:08}"));
}

/// An individual key: usually `index`'s, sometimes NULL or dangling (no such individual).
fn individual_ref(rng: &mut ChaCha8Rng, w: &mut PartWriter, column: usize, index: u64, n: u64, null: f64, dangling: f64) {
    let roll = rng.random::<f64>();
    if roll < null {
        w.string(column, None);
    } else if roll < null + dangling {
        individual_key(w, column, n + rng.random_range(0..n));
    } else {
        individual_key(w, column, index);
    }
}

fn null_if_empty(value: &str) -> Option<&str> {
    if value.is_empty() { None } else { Some(value) }
}

fn write_products(ctx: &GenContext, table: &Table, count: u64, progress: &indicatif::ProgressBar) -> anyhow::Result<(Vec<ProductInfo>, u64)> {
    let mut rng = stream_rng(ctx.seed, stream_id(STREAM_PRODUCTS, 0));
    let mut w = PartWriter::create(&ctx.out, table, 0, progress)?;
    let category_weights: Vec<(usize, u32)> = CATEGORIES.iter().enumerate().map(|(i, c)| (i, c.1)).collect();
    let mut infos = Vec::with_capacity(count as usize);
    for p in 0..count {
        let category = CATEGORIES[*pick(&mut rng, &category_weights)];
        let brand = BRANDS[rng.random_range(0..BRANDS.len())];
        let noun = category.3[rng.random_range(0..category.3.len())];
        let price = cents((category.2 * (0.7 * normal(&mut rng)).exp()).max(0.99));
        infos.push(ProductInfo { price });
        let copies = if chance(&mut rng, 0.01) { 2 } else { 1 };
        for copy in 0..copies {
            if chance(&mut rng, 0.005) {
                w.string(0, None);
            } else {
                w.string_fmt(0, format_args!("P{p:06}"));
            }
            w.string_fmt(1, format_args!("{brand} {noun} {}", p % 997));
            w.string(2, Some(category.0));
            w.string(3, if chance(&mut rng, 0.02) { None } else { Some(brand) });
            // A duplicate row is an older copy with another price.
            w.float(4, Some(if copy == 0 { price } else { cents(price * 1.1) }));
            w.date(5, Some(day_within(&mut rng, 8 * 365)));
            w.bool(6, Some(chance(&mut rng, 0.9)));
            w.end_row()?;
        }
    }
    Ok((infos, w.finish()?))
}

fn write_individuals(
    ctx: &GenContext,
    individual_t: &Table,
    loyalty_t: &Table,
    part: usize,
    range: Range<u64>,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<(String, u64)>> {
    let n = ctx.scale;
    let mut rng = stream_rng(ctx.seed, stream_id(STREAM_INDIVIDUALS, part));
    let mut people = PartWriter::create(&ctx.out, individual_t, part, progress)?;
    let mut loyalty = PartWriter::create(&ctx.out, loyalty_t, part, progress)?;
    for i in range.clone() {
        individual_row(&mut rng, &mut people, Some(i), ctx.seed)?;
        if chance(&mut rng, 0.01) {
            // The same person again, from another source system.
            let j = rng.random_range(range.start..=i);
            individual_row(&mut rng, &mut people, Some(j), ctx.seed)?;
        }
        if chance(&mut rng, 0.002) {
            individual_row(&mut rng, &mut people, None, ctx.seed)?;
        }
        if chance(&mut rng, 0.35) {
            loyalty_row(&mut rng, &mut loyalty, i, i, n)?;
            if chance(&mut rng, 0.02) {
                loyalty_row(&mut rng, &mut loyalty, i + n, i, n)?;
            }
        }
    }
    Ok(vec![(individual_t.name.clone(), people.finish()?), (loyalty_t.name.clone(), loyalty.finish()?)])
}

/// When individual `index` signed up: within six years before the as-of instant, fixed by
/// the seed so that the order generator can place orders after it.
fn signup_of(seed: u64, index: u64) -> i64 {
    AS_OF_MICROS - (unit_hash(seed, index, TRAIT_SIGNUP) * (6 * 365 * MICROS_PER_DAY) as f64) as i64
}

fn individual_row(rng: &mut ChaCha8Rng, w: &mut PartWriter, index: Option<u64>, seed: u64) -> anyhow::Result<()> {
    match index {
        Some(i) => individual_key(w, 0, i),
        None => w.string(0, None),
    }
    if chance(rng, 0.03) {
        w.string(1, None);
    } else {
        let domain = pick(rng, EMAIL_DOMAINS);
        let user = index.unwrap_or_else(|| rng.random_range(0..1_000_000_000));
        w.string_fmt(1, format_args!("user{user}@{domain}"));
    }
    w.string(2, null_if_empty(pick::<&str>(rng, GENDERS)));
    w.string(3, null_if_empty(pick::<&str>(rng, COUNTRIES)));
    if chance(rng, 0.12) {
        w.date(4, None);
    } else {
        // Born around 1985 (days since 1970: 1985-07-01 is 5660), 13 years either way.
        let day = 5660.0 + normal(rng) * 13.0 * 365.25;
        w.date(4, Some((day as i32).clamp(-10_957, AS_OF_DAY - 16 * 365)));
    }
    w.timestamp(5, Some(index.map_or_else(|| instant_within_days(rng, 6 * 365), |i| signup_of(seed, i))));
    let opt_in = rng.random::<f64>();
    w.bool(6, if opt_in < 0.03 { None } else { Some(opt_in < 0.65) });
    w.end_row()
}

fn loyalty_row(rng: &mut ChaCha8Rng, w: &mut PartWriter, key: u64, individual: u64, n: u64) -> anyhow::Result<()> {
    let points = exponential(rng, 3000.0) as i64;
    let joined_on = day_within(rng, 5 * 365);
    let copies = if chance(rng, 0.005) { 2 } else { 1 };
    for copy in 0..copies {
        w.string_fmt(0, format_args!("L{key:08}"));
        individual_ref(rng, w, 1, individual, n, 0.005, 0.005);
        let tier = match points {
            _ if chance(rng, 0.01) => None,
            p if p < 1000 => Some("bronze"),
            p if p < 5000 => Some("silver"),
            p if p < 15000 => Some("gold"),
            _ => Some("platinum"),
        };
        w.string(2, tier);
        // A duplicate row is a stale snapshot with fewer points.
        w.int(3, Some(if copy == 0 { points } else { points / 2 }));
        w.date(4, Some(joined_on));
        w.end_row()?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_orders(
    ctx: &GenContext,
    order_t: &Table,
    line_t: &Table,
    part: usize,
    range: Range<u64>,
    total_orders: u64,
    people: &Skewed,
    popular: &Skewed,
    products: &[ProductInfo],
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<(String, u64)>> {
    let n = ctx.scale;
    let product_count = products.len() as u64;
    let mut rng = stream_rng(ctx.seed, stream_id(STREAM_ORDERS, part));
    let mut orders = PartWriter::create(&ctx.out, order_t, part, progress)?;
    let mut lines = PartWriter::create(&ctx.out, line_t, part, progress)?;
    for o in range {
        let order_id = o as i64 + 1;
        // Lines: 1 (50%), 2 (25%), 3 (12.5%), up to 8: about 2 an order.
        let mut line_count = 1;
        while line_count < 8 && chance(&mut rng, 0.5) {
            line_count += 1;
        }
        let mut subtotal = 0.0;
        for j in 0..line_count {
            let product = popular.sample(&mut rng);
            let price = products.get(product as usize).map_or(9.99, |p| p.price);
            let quantity: i64 = match rng.random_range(0..100) {
                0..70 => 1,
                70..88 => 2,
                88..95 => 3,
                _ => rng.random_range(4..=10),
            };
            let unit_price = if chance(&mut rng, 0.2) { cents(price * rng.random_range(0.7..0.9)) } else { price };
            subtotal += unit_price * quantity as f64;
            let copies = if chance(&mut rng, 0.003) { 2 } else { 1 };
            for _ in 0..copies {
                lines.int(0, Some(order_id * 8 + j));
                let roll = rng.random::<f64>();
                lines.int(
                    1,
                    if roll < 0.002 {
                        None
                    } else if roll < 0.004 {
                        Some(total_orders as i64 + 1 + rng.random_range(0..total_orders as i64))
                    } else {
                        Some(order_id)
                    },
                );
                let roll = rng.random::<f64>();
                if roll < 0.002 {
                    lines.string(2, None);
                } else if roll < 0.005 {
                    lines.string_fmt(2, format_args!("P{:06}", product_count + rng.random_range(0..product_count)));
                } else {
                    lines.string_fmt(2, format_args!("P{product:06}"));
                }
                lines.int(3, Some(quantity));
                lines.float(4, Some(unit_price));
                lines.end_row()?;
            }
        }
        // Orders come after their buyer's signup: recent signups have had less time to buy.
        let ordered_at = instant_within_days(&mut rng, 730);
        let mut individual = people.sample(&mut rng);
        for _ in 0..8 {
            if signup_of(ctx.seed, individual) <= ordered_at {
                break;
            }
            individual = people.sample(&mut rng);
        }
        let shipping = if subtotal < 50.0 { 4.99 } else { 0.0 };
        let amount = if chance(&mut rng, 0.005) { None } else { Some(cents(subtotal + shipping)) };
        let channel = *pick(&mut rng, CHANNELS);
        let status = *pick(&mut rng, STATUSES);
        let copies = if chance(&mut rng, 0.007) { 2 } else { 1 };
        for copy in 0..copies {
            orders.int(0, Some(order_id));
            individual_ref(&mut rng, &mut orders, 1, individual, n, 0.015, 0.008);
            orders.timestamp(2, Some(ordered_at));
            orders.float(3, amount);
            orders.string(4, Some(channel));
            // A duplicate row is the same order captured earlier, still pending.
            orders.string(5, Some(if copy == 0 { status } else { "pending" }));
            orders.end_row()?;
        }
        if chance(&mut rng, 0.002) {
            orders.int(0, None);
            let someone = people.sample(&mut rng);
            individual_ref(&mut rng, &mut orders, 1, someone, n, 0.015, 0.008);
            orders.timestamp(2, Some(instant_within_days(&mut rng, 730)));
            orders.float(3, Some(cents(exponential(&mut rng, 40.0))));
            orders.string(4, Some(*pick(&mut rng, CHANNELS)));
            orders.string(5, Some(*pick(&mut rng, STATUSES)));
            orders.end_row()?;
        }
    }
    Ok(vec![(order_t.name.clone(), orders.finish()?), (line_t.name.clone(), lines.finish()?)])
}

/// Writes the event's key: its own, sometimes the previous one again, sometimes NULL.
fn event_key(rng: &mut ChaCha8Rng, w: &mut PartWriter, id: i64) {
    let roll = rng.random::<f64>();
    if roll < 0.001 {
        w.int(0, None);
    } else if roll < 0.006 && id > 1 {
        w.int(0, Some(id - 1));
    } else {
        w.int(0, Some(id));
    }
}

fn write_email_events(
    ctx: &GenContext,
    table: &Table,
    part: usize,
    range: Range<u64>,
    readers: &Skewed,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<(String, u64)>> {
    let n = ctx.scale;
    let mut rng = stream_rng(ctx.seed, stream_id(STREAM_EMAIL, part));
    let mut w = PartWriter::create(&ctx.out, table, part, progress)?;
    for e in range {
        event_key(&mut rng, &mut w, e as i64 + 1);
        let individual = readers.sample(&mut rng);
        individual_ref(&mut rng, &mut w, 1, individual, n, 0.005, 0.01);
        let kind = if chance(&mut rng, BOUNCE_RATE) && unit_hash(ctx.seed, individual, TRAIT_BOUNCES) < BOUNCING_INDIVIDUALS {
            "bounce"
        } else if chance(&mut rng, UNSUBSCRIBE_RATE) && unit_hash(ctx.seed, individual, TRAIT_UNSUBSCRIBES) < UNSUBSCRIBING_INDIVIDUALS {
            "unsubscribe"
        } else {
            *pick(&mut rng, EMAIL_KINDS)
        };
        w.string(2, Some(kind));
        let at = instant_within_days(&mut rng, 365);
        w.timestamp(3, Some(at));
        let weeks_ago = (AS_OF_MICROS - at) / (7 * MICROS_PER_DAY);
        w.string_fmt(4, format_args!("newsletter_w{weeks_ago:02}"));
        w.end_row()?;
    }
    Ok(vec![(table.name.clone(), w.finish()?)])
}

#[allow(clippy::too_many_arguments)]
fn write_web_visits(
    ctx: &GenContext,
    table: &Table,
    part: usize,
    range: Range<u64>,
    readers: &Skewed,
    popular: &Skewed,
    product_count: u64,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<(String, u64)>> {
    let n = ctx.scale;
    let mut rng = stream_rng(ctx.seed, stream_id(STREAM_WEB, part));
    let mut w = PartWriter::create(&ctx.out, table, part, progress)?;
    for v in range {
        event_key(&mut rng, &mut w, v as i64 + 1);
        // A quarter of visits are anonymous (NULL individual).
        let individual = readers.sample(&mut rng);
        individual_ref(&mut rng, &mut w, 1, individual, n, 0.25, 0.005);
        let page = *pick(&mut rng, PAGES);
        match page {
            "/product/" => {
                let product = popular.sample(&mut rng);
                let dangling = chance(&mut rng, 0.005);
                let product = if dangling { product_count + product } else { product };
                w.string_fmt(2, format_args!("/product/P{product:06}"));
                w.string_fmt(3, format_args!("P{product:06}"));
            }
            "/category/" => {
                let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())].0;
                w.string_fmt(2, format_args!("/category/{category}"));
                w.string(3, None);
            }
            "/sale" => {
                w.string(2, Some(if chance(&mut rng, 0.5) { "/sale" } else { "/sale/clearance" }));
                w.string(3, None);
            }
            other => {
                w.string(2, Some(other));
                w.string(3, None);
            }
        }
        w.timestamp(4, Some(instant_within_days(&mut rng, 365)));
        w.int(5, if chance(&mut rng, 0.04) { None } else { Some(exponential(&mut rng, 180.0) as i64) });
        w.string(6, Some(*pick(&mut rng, DEVICES)));
        w.end_row()?;
    }
    Ok(vec![(table.name.clone(), w.finish()?)])
}

/// The retail segments: realistic audiences, every one valid against the model. Each has a
/// hand-written DuckDB twin in `bench/sql/retail/<name>.sql`.
fn segments() -> Vec<(String, Value)> {
    let segment = |name: &str, filter: Value| (name.to_string(), json!({"name": name, "root": "individual", "filter": filter}));
    vec![
        // The spec's example: North Americans who spent over $100 in 30 days, never unsubscribed.
        segment(
            "recent_big_spenders_not_unsubscribed",
            json!({"and": [
                {"field": "country", "op": "in", "value": ["US", "CA"]},
                {"related": "order",
                 "where": {"field": "ordered_at", "op": "within_last", "value": "30d"},
                 "having": {"agg": "sum", "field": "amount", "op": "gt", "value": 100}},
                {"not": {"related": "email_event", "via": ["email_event_individual"],
                         "where": {"field": "kind", "op": "eq", "value": "unsubscribe"}}}
            ]}),
        ),
        // Gold/platinum members with 5,000+ points who spent $500+ on completed orders this year.
        segment(
            "high_value_loyalty_members",
            json!({"and": [
                {"related": "loyalty_account",
                 "where": {"and": [
                     {"field": "tier", "op": "in", "value": ["gold", "platinum"]},
                     {"field": "points", "op": "ge", "value": 5000}
                 ]}},
                {"related": "order",
                 "where": {"and": [
                     {"field": "status", "op": "eq", "value": "completed"},
                     {"field": "ordered_at", "op": "within_last", "value": "365d"}
                 ]},
                 "having": {"agg": "sum", "field": "amount", "op": "ge", "value": 500}}
            ]}),
        ),
        // Opted-in buyers with a non-cancelled order over 180 days ago and none since.
        segment(
            "lapsed_buyers",
            json!({"and": [
                {"field": "email_opt_in", "op": "eq", "value": true},
                {"related": "order",
                 "where": {"and": [
                     {"field": "ordered_at", "op": "older_than", "value": "180d"},
                     {"field": "status", "op": "ne", "value": "cancelled"}
                 ]}},
                {"not": {"related": "order", "where": {"field": "ordered_at", "op": "within_last", "value": "180d"}}}
            ]}),
        ),
        // Opened 3+ emails in 30 days, have an address, and no bounce in 90 days.
        segment(
            "engaged_email_openers",
            json!({"and": [
                {"field": "email", "op": "is_not_null"},
                {"related": "email_event",
                 "where": {"and": [
                     {"field": "kind", "op": "eq", "value": "open"},
                     {"field": "at", "op": "within_last", "value": "30d"}
                 ]},
                 "having": {"agg": "count", "op": "ge", "value": 3}},
                {"not": {"related": "email_event",
                         "where": {"and": [
                             {"field": "kind", "op": "eq", "value": "bounce"},
                             {"field": "at", "op": "within_last", "value": "90d"}
                         ]}}}
            ]}),
        ),
        // Placed a completed or pending order in 90 days that contained an electronics product.
        segment(
            "recent_electronics_buyers",
            json!({"related": "order",
            "where": {"and": [
                {"field": "ordered_at", "op": "within_last", "value": "90d"},
                {"field": "status", "op": "in", "value": ["completed", "pending"]},
                {"related": "product", "via": ["order_line_order", "order_line_product"],
                 "where": {"field": "category", "op": "eq", "value": "electronics"}}
            ]}}),
        ),
        // Born 1980–1999 and bought products of 4+ categories (3 hops; `via` picks the
        // order path over the shorter web-visit path to product).
        segment(
            "multi_category_shoppers",
            json!({"and": [
                {"field": "birth_date", "op": "between", "value": ["1980-01-01", "1999-12-31"]},
                {"related": "product", "via": ["order_individual", "order_line_order", "order_line_product"],
                 "having": {"agg": "count_distinct", "field": "category", "op": "ge", "value": 4}}
            ]}),
        ),
        // Viewed 2+ electronics or home product pages in 30 days, no order in 30 days.
        segment(
            "browsed_not_bought",
            json!({"and": [
                {"related": "web_visit",
                 "where": {"and": [
                     {"field": "visited_at", "op": "within_last", "value": "30d"},
                     {"field": "page", "op": "starts_with", "value": "/product/"},
                     {"related": "product", "via": ["web_visit_product"],
                      "where": {"field": "category", "op": "in", "value": ["electronics", "home"]}}
                 ]},
                 "having": {"agg": "count", "op": "ge", "value": 2}},
                {"not": {"related": "order", "where": {"field": "ordered_at", "op": "within_last", "value": "30d"}}}
            ]}),
        ),
        // Signed up in 90 days, never ordered, and reachable (opted in, or a Gmail address).
        segment(
            "new_signups_without_order",
            json!({"and": [
                {"field": "signup_at", "op": "within_last", "value": "90d"},
                {"related": "order", "having": {"agg": "count", "op": "eq", "value": 0}},
                {"or": [
                    {"field": "email_opt_in", "op": "eq", "value": true},
                    {"field": "email", "op": "ends_with", "value": "@gmail.com"}
                ]}
            ]}),
        ),
        // A cheap (< $15) app order, or 3+ visits to sale pages; gender known.
        segment(
            "bargain_hunters",
            json!({"and": [
                {"or": [
                    {"related": "order",
                     "where": {"and": [
                         {"field": "channel", "op": "eq", "value": "app"},
                         {"field": "status", "op": "not_in", "value": ["cancelled", "returned"]}
                     ]},
                     "having": {"agg": "min", "field": "amount", "op": "lt", "value": 15}},
                    {"related": "web_visit", "via": ["web_visit_individual"],
                     "where": {"field": "page", "op": "contains", "value": "sale"},
                     "having": {"agg": "count", "op": "ge", "value": 3}}
                ]},
                {"not": {"field": "gender", "op": "is_null"}}
            ]}),
        ),
        // Outside the US, a 10+ minute desktop session in 90 days, completed orders averaging over $60.
        segment(
            "long_session_desktop_browsers",
            json!({"and": [
                {"field": "country", "op": "not_in", "value": ["US", "us"]},
                {"related": "web_visit",
                 "where": {"and": [
                     {"field": "visited_at", "op": "within_last", "value": "90d"},
                     {"field": "device", "op": "eq", "value": "desktop"}
                 ]},
                 "having": {"agg": "max", "field": "duration_s", "op": "ge", "value": 600}},
                {"related": "order",
                 "where": {"field": "status", "op": "eq", "value": "completed"},
                 "having": {"agg": "avg", "field": "amount", "op": "gt", "value": 60}}
            ]}),
        ),
    ]
}
