//! Word lists the NLU agent matches against: region and product synonyms and intent cue phrases.
//!
//! Phrases are lowercase and written as space-separated words; they are matched against the
//! question's word tokens, so "best-selling" in a question matches the phrase "best selling".

/// Canonical region code (as stored in `regions.code`) and the phrases that name it.
pub(super) const REGIONS: &[(&str, &[&str])] = &[
    (
        "NA",
        &[
            "north america",
            "north american",
            "united states",
            "usa",
            "canada",
            "americas",
        ],
    ),
    (
        "EMEA",
        &[
            "emea",
            "europe",
            "european",
            "middle east",
            "africa",
            "uk",
            "united kingdom",
            "germany",
            "france",
            "ireland",
        ],
    ),
    (
        "APAC",
        &[
            "apac",
            "asia pacific",
            "asia",
            "asian",
            "japan",
            "australia",
            "india",
            "singapore",
        ],
    ),
    (
        "LATAM",
        &[
            "latam",
            "latin america",
            "south america",
            "brazil",
            "mexico",
            "americas",
        ],
    ),
];

/// Short uppercase region names that are also ordinary English words ("us", "na"), so they are
/// only accepted when the question writes them in capitals.
pub(super) const CASE_SENSITIVE_REGIONS: &[(&str, &str)] = &[("US", "NA"), ("NA", "NA")];

/// Canonical product name (as stored in `products.name`) and the phrases that name it.
pub(super) const PRODUCTS: &[(&str, &[&str])] = &[
    ("Insight Pro", &["insight pro"]),
    ("Insight Lite", &["insight lite"]),
    ("DataPipe", &["datapipe", "data pipe"]),
    ("Dashboard Studio", &["dashboard studio"]),
    ("Forecast Engine", &["forecast engine"]),
    ("Sensor Kit", &["sensor kit", "sensor kits", "sensors"]),
    (
        "Edge Gateway",
        &["edge gateway", "edge gateways", "gateway", "gateways"],
    ),
    ("Support Plus", &["support plus"]),
    ("Training Pack", &["training pack", "training packs"]),
];

/// Product categories expand to their products, so "hardware revenue" filters on both devices.
pub(super) const CATEGORIES: &[(&str, &[&str])] = &[
    (
        "software",
        &[
            "Insight Pro",
            "Insight Lite",
            "DataPipe",
            "Dashboard Studio",
            "Forecast Engine",
        ],
    ),
    ("hardware", &["Sensor Kit", "Edge Gateway"]),
    ("services", &["Support Plus", "Training Pack"]),
];

/// Explicit "ranking of products" phrases.
pub(super) const TOP_CUES: &[&str] = &[
    "top",
    "best selling",
    "bestselling",
    "best seller",
    "best sellers",
    "bestseller",
    "bestsellers",
    "most popular",
    "highest selling",
    "highest grossing",
    "top grossing",
    "ranking",
    "rank",
];

/// Superlatives: combined with "product" they ask for a ranking of products, combined with
/// "region" for a comparison of regions ("which region sold the most").
pub(super) const SUPERLATIVES: &[&str] = &[
    "most",
    "best",
    "highest",
    "biggest",
    "largest",
    "leading",
    "strongest",
    "least",
    "worst",
];

pub(super) const COMPARE_CUES: &[&str] = &[
    "compare",
    "compared",
    "comparison",
    "comparing",
    "versus",
    "vs",
    "by region",
    "per region",
    "each region",
    "every region",
    "all regions",
    "across regions",
    "regional breakdown",
    "which region",
];

pub(super) const TREND_CUES: &[&str] = &[
    "trend",
    "trends",
    "trended",
    "trending",
    "over time",
    "growth",
    "grow",
    "grew",
    "growing",
    "grown",
    "quarter over quarter",
    "qoq",
    "by quarter",
    "per quarter",
    "each quarter",
    "quarterly",
    "evolve",
    "evolved",
    "trajectory",
    "history",
];

pub(super) const UNITS_CUES: &[&str] = &[
    "units", "unit", "how many", "volume", "quantity", "shipped", "seats", "licences",
];

pub(super) const REVENUE_CUES: &[&str] = &[
    "revenue", "revenues", "sales", "income", "turnover", "earn", "earned", "made", "money",
    "bookings", "booked", "dollars", "grossed", "grossing", "total", "sold", "sell",
];

/// Revenue words strong enough to override a "selling"-style ranking defaulting to units.
pub(super) const EXPLICIT_REVENUE_CUES: &[&str] = &[
    "revenue", "revenues", "income", "turnover", "money", "dollars", "grossing", "bookings",
];

/// "What does X mean?" style questions ask for a definition, not a number, even when X is a
/// metric such as revenue.
pub(super) const DEFINITION_CUES: &[&str] = &[
    "define",
    "defined",
    "definition",
    "what does",
    "meaning",
    "mean",
    "means",
    "calculated",
    "counted",
    "measured",
];

/// Words that clearly ask about the document collection (policies, contracts, people, prices).
/// Without a time scope or an explicit metric they make the question a policy question, even
/// when a product or "sales" is mentioned ("the discount policy for Insight Pro sales").
pub(super) const STRONG_POLICY_CUES: &[&str] = &[
    "policy",
    "policies",
    "refund",
    "refunds",
    "warranty",
    "sla",
    "service level",
    "uptime",
    "privacy",
    "gdpr",
    "retention",
    "invoice",
    "invoices",
    "invoicing",
    "billing",
    "billed",
    "manager",
    "managers",
    "manages",
    "managed",
    "contract",
    "contracts",
    "agreement",
    "agreements",
    "pricing",
    "price",
    "list price",
    "cost",
];

/// Weaker document-ish words, also ordinary in data questions ("support", "who"); they only
/// decide the intent when nothing else matched.
pub(super) const WEAK_POLICY_CUES: &[&str] = &[
    "return",
    "returns",
    "discount",
    "discounts",
    "payment",
    "who",
    "support",
    "onboarding",
    "approval",
    "approve",
    "hosted",
    "office",
    "rules",
    "allowed",
];

/// Small number words, for "top five".
pub(super) const NUMBER_WORDS: &[(&str, u32)] = &[
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("twelve", 12),
    ("fifteen", 15),
    ("twenty", 20),
];
