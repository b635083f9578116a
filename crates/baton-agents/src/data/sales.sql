-- Acme Analytics sales data: schema plus deterministic seed rows.
--
-- The seed rows are computed from small integer formulas rather than random numbers so that
-- every run (and every test) sees exactly the same figures. Eight quarters x four regions x
-- nine products = 288 sales rows.

CREATE TABLE regions (
    id      INTEGER PRIMARY KEY,
    code    TEXT NOT NULL UNIQUE,
    name    TEXT NOT NULL,
    manager TEXT NOT NULL
);

CREATE TABLE products (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    category         TEXT NOT NULL,
    list_price_cents INTEGER NOT NULL
);

-- Quarter labels sort lexicographically in time order ('2023-Q4' < '2024-Q1'); `idx` is kept
-- for the seed formulas only.
CREATE TABLE quarters (
    idx     INTEGER PRIMARY KEY,
    label   TEXT NOT NULL UNIQUE,
    year    INTEGER NOT NULL,
    quarter INTEGER NOT NULL CHECK (quarter BETWEEN 1 AND 4)
);

CREATE TABLE sales (
    id            INTEGER PRIMARY KEY,
    region_id     INTEGER NOT NULL REFERENCES regions(id),
    product_id    INTEGER NOT NULL REFERENCES products(id),
    quarter       TEXT NOT NULL REFERENCES quarters(label),
    units         INTEGER NOT NULL CHECK (units >= 0),
    revenue_cents INTEGER NOT NULL CHECK (revenue_cents >= 0)
);

CREATE INDEX sales_by_quarter ON sales(quarter);
CREATE INDEX sales_by_region ON sales(region_id);

INSERT INTO regions (id, code, name, manager) VALUES
    (1, 'NA',    'North America',                'Dana Whitfield'),
    (2, 'EMEA',  'Europe, Middle East & Africa', 'Lars Becker'),
    (3, 'APAC',  'Asia-Pacific',                 'Mei Tanaka'),
    (4, 'LATAM', 'Latin America',                'Rafael Souza');

INSERT INTO products (id, name, category, list_price_cents) VALUES
    (1, 'Insight Pro',      'software', 249900),
    (2, 'Insight Lite',     'software',  49900),
    (3, 'DataPipe',         'software', 129900),
    (4, 'Dashboard Studio', 'software',  89900),
    (5, 'Forecast Engine',  'software', 189900),
    (6, 'Sensor Kit',       'hardware',  34900),
    (7, 'Edge Gateway',     'hardware',  79900),
    (8, 'Support Plus',     'services',  59900),
    (9, 'Training Pack',    'services',  19900);

INSERT INTO quarters (idx, label, year, quarter) VALUES
    (1, '2023-Q1', 2023, 1), (2, '2023-Q2', 2023, 2),
    (3, '2023-Q3', 2023, 3), (4, '2023-Q4', 2023, 4),
    (5, '2024-Q1', 2024, 1), (6, '2024-Q2', 2024, 2),
    (7, '2024-Q3', 2024, 3), (8, '2024-Q4', 2024, 4);

-- units    = product base demand scaled by region size, plus deterministic "noise" and a
--            per-product growth trend over the quarters;
-- discount = 0..12 percent off list price, also deterministic.
INSERT INTO sales (region_id, product_id, quarter, units, revenue_cents)
WITH
    product_mix (product_id, base_units, growth) AS (
        VALUES (1, 40, 3), (2, 160, 6), (3, 60, 4), (4, 90, 2), (5, 30, 5),
               (6, 220, 9), (7, 70, 1), (8, 80, 2), (9, 120, -2)
    ),
    region_mix (region_id, weight_pct) AS (
        VALUES (1, 140), (2, 110), (3, 80), (4, 45)
    ),
    seeded AS (
        SELECT
            r.id AS region_id,
            p.id AS product_id,
            q.label AS quarter,
            q.idx AS quarter_idx,
            p.list_price_cents AS price,
            pm.base_units * rm.weight_pct / 100
                + (r.id * 37 + p.id * 53 + q.idx * 29) % 23
                + q.idx * pm.growth AS units,
            (r.id * 3 + p.id * 5 + q.idx * 7) % 13 AS discount_pct
        FROM regions r
        JOIN region_mix rm ON rm.region_id = r.id
        CROSS JOIN products p
        JOIN product_mix pm ON pm.product_id = p.id
        CROSS JOIN quarters q
    )
SELECT region_id, product_id, quarter, units, units * price * (100 - discount_pct) / 100
FROM seeded
ORDER BY quarter_idx, region_id, product_id;
