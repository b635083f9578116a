//! Security: every way of authenticating to NATS (user/password, token, nkey, `.creds` file,
//! TLS with client certificates) and to Redis (ACL user, TLS) runs a job end to end; wrong
//! credentials fail at once with a clear error; the least-privilege config in `deploy/`
//! confines an agent to its own tasks and results; and no secret reaches a log line or an
//! event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use baton_harness::{NatsServer, RedisOptions};
use baton_nats::{NatsOptions, Secret};
use baton_protocol::messages::{EventKind, JobStatus};
use baton_protocol::{AgentName, subject};
use baton_tests::{Fleet, binary_path, plan};
use futures::StreamExt;
use serde_json::json;

const JOB_TIMEOUT: Duration = Duration::from_secs(60);

fn nats_user(url: &str, user: &str, password: &str) -> NatsOptions {
    NatsOptions {
        url: url.to_owned(),
        user: Some(user.to_owned()),
        password: Some(Secret::new(password)),
        ..NatsOptions::default()
    }
}

/// Runs a two-step job on agent type `agent` and expects it to succeed.
async fn run_job(fleet: &Fleet, agent: &str) {
    let job = fleet
        .submit(plan(&[("a", agent, &[]), ("b", agent, &["a"])]), json!({}))
        .await;
    fleet.wait_for(job, JobStatus::Succeeded, JOB_TIMEOUT).await;
    // The decision log is written too: its commands are in the ACL user's set.
    let trace = fleet.trace(job).await;
    assert!(
        baton_tests::logged(&trace, |k| matches!(k, EventKind::JobSucceeded { .. })),
        "{trace:#?}"
    );
}

/// Keeps the coordinator's name, takes everything else from `nats`.
fn coordinator_nats(fleet: &mut Fleet, nats: NatsOptions) {
    let name = fleet.coordinator_options.nats.name.clone();
    fleet.coordinator_options.nats = NatsOptions { name, ..nats };
}

const NATS_USERS: &str = r#"authorization {
  users: [
    {user: coordinator, password: "coordinator-pw"}
    {user: worker, password: "worker-pw"}
    {user: client, password: "client-pw"}
  ]
}"#;

/// The least-privilege Redis user docs/security.md recommends, and a default user that can
/// only answer the harness's readiness probe.
fn redis_acl(password: &str) -> String {
    format!(
        "user default on nopass -@all +ping +config|get\n\
         user baton on >{password} ~baton:* resetchannels -@all +ping +get +set +exists \
         +append +strlen +getrange +pexpire +pttl +hget +hset +hsetnx +hdel +hincrby +hgetall \
         +hmget +zadd +zrem +zrange +zrangebyscore +zscore +eval +evalsha +script|load\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password_to_nats_and_an_acl_user_to_redis() {
    let nats = baton_harness::NatsOptions {
        extra_config: NATS_USERS.into(),
        ..Default::default()
    };
    let redis = RedisOptions {
        extra_config: redis_acl("redis-pw"),
        ..Default::default()
    };
    let mut fleet = Fleet::start_with(nats, redis, |server| {
        nats_user(&server.url(), "client", "client-pw")
    })
    .await;
    let url = fleet.nats.url();
    coordinator_nats(&mut fleet, nats_user(&url, "coordinator", "coordinator-pw"));
    fleet.coordinator_options.redis_user = Some("baton".into());
    fleet.coordinator_options.redis_password = Some(Secret::new("redis-pw"));
    // The Redis password may also come in the URL.
    let mut in_url = fleet.coordinator_options.clone();
    in_url.redis_user = None;
    in_url.redis_password = None;
    in_url.redis_url = format!("redis://baton:redis-pw@127.0.0.1:{}", fleet.redis.port());
    fleet.worker_nats = nats_user(&url, "worker", "worker-pw");
    fleet.spawn_coordinator();
    fleet.spawn_coordinator_with(in_url);
    fleet.wait_ready().await;
    fleet.spawn_sim("sim");
    run_job(&fleet, "sim").await;

    // Wrong Redis password: the coordinator stops at once, saying why, without the secret.
    let mut wrong = fleet.coordinator_options.clone();
    wrong.redis_url = format!("redis://baton:not-the-pw@127.0.0.1:{}", fleet.redis.port());
    wrong.redis_user = None;
    wrong.redis_password = None;
    let error = run_coordinator(wrong).await;
    assert!(error.contains("could not connect to Redis"), "{error}");
    assert!(error.contains("baton:[redacted]@"), "{error}");
    assert!(!error.contains("not-the-pw"), "{error}");

    // Wrong NATS password: refused, not retried forever.
    let mut wrong = fleet.coordinator_options.clone();
    wrong.nats.password = Some(Secret::new("not-the-pw"));
    let error = run_coordinator(wrong).await;
    assert!(error.contains("authorization violation"), "{error}");
    assert!(!error.contains("not-the-pw"), "{error}");
}

/// Runs a coordinator that is expected to fail at startup; returns its error.
async fn run_coordinator(options: baton_coordinator::Options) -> String {
    let run = baton_coordinator::Coordinator::new(options).run(std::future::pending());
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(Err(error)) => error.to_string(),
        Ok(Ok(())) => panic!("the coordinator ran"),
        Err(_) => panic!("the coordinator neither ran nor failed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_runs_a_job_and_a_wrong_token_is_refused() {
    let nats = baton_harness::NatsOptions {
        extra_config: "authorization { token: \"s3cret-token\" }".into(),
        ..Default::default()
    };
    let token = |server: &NatsServer| NatsOptions {
        url: server.url(),
        token: Some(Secret::new("s3cret-token")),
        ..NatsOptions::default()
    };
    let mut fleet = Fleet::start_with(nats, RedisOptions::default(), token).await;
    fleet.spawn_coordinator();
    fleet.wait_ready().await;
    fleet.spawn_sim("sim");
    run_job(&fleet, "sim").await;

    let mut wrong = token(&fleet.nats);
    wrong.token = Some(Secret::new("guess"));
    let error = tokio::time::timeout(Duration::from_secs(15), baton_nats::connect(&wrong))
        .await
        .expect("a refused token is not retried")
        .unwrap_err()
        .to_string();
    assert!(error.contains("authorization violation"), "{error}");
    assert!(!error.contains("guess"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_auth_runs_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let service = nkeys::KeyPair::new_user();
    let client = nkeys::KeyPair::new_user();
    let seed_file = |name: &str, key: &nkeys::KeyPair| {
        let path = dir.path().join(name);
        std::fs::write(&path, key.seed().unwrap()).unwrap();
        path
    };
    let service_seed = seed_file("service.nk", &service);
    let client_seed = seed_file("client.nk", &client);
    let nats = baton_harness::NatsOptions {
        extra_config: format!(
            "authorization {{ users: [ {{nkey: {}}}, {{nkey: {}}} ] }}",
            service.public_key(),
            client.public_key()
        ),
        ..Default::default()
    };
    let mut fleet = Fleet::start_with(nats, RedisOptions::default(), |server| NatsOptions {
        url: server.url(),
        nkey: Some(client_seed.clone()),
        ..NatsOptions::default()
    })
    .await;
    let service = NatsOptions {
        url: fleet.nats.url(),
        nkey: Some(service_seed),
        ..NatsOptions::default()
    };
    coordinator_nats(&mut fleet, service.clone());
    fleet.worker_nats = service;
    fleet.spawn_coordinator();
    fleet.wait_ready().await;
    fleet.spawn_sim("sim");
    run_job(&fleet, "sim").await;
}

/// Unpadded base64url, the encoding of a JWT's three parts.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |bits, (i, &b)| bits | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(bits >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A NATS JWT as `nsc` makes one: `claims` plus the fields every claim carries (`jti`, `iat`,
/// `iss`, `nats.version: 2`), signed with `issuer`'s nkey.
fn jwt(mut claims: serde_json::Value, issuer: &nkeys::KeyPair) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    claims["jti"] = json!(uuid::Uuid::now_v7().to_string());
    claims["iat"] = json!(now.unwrap().as_secs());
    claims["iss"] = json!(issuer.public_key());
    claims["nats"]["version"] = json!(2);
    let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let signed = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", base64url(&signature))
}

/// A `.creds` file in `nsc`'s format for a new user signed by `account`; returns its path
/// and the user's seed.
fn creds_file(dir: &Path, name: &str, account: &nkeys::KeyPair) -> (PathBuf, String) {
    let user = nkeys::KeyPair::new_user();
    // Limits left out are 0, and a user with `subs: 0` may subscribe to nothing.
    let limits = json!({"type": "user", "subs": -1, "data": -1, "payload": -1});
    let user_jwt = jwt(
        json!({"sub": user.public_key(), "name": name, "nats": limits}),
        account,
    );
    let seed = user.seed().unwrap();
    let path = dir.join(format!("{name}.creds"));
    std::fs::write(
        &path,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        ),
    )
    .unwrap();
    (path, seed)
}

/// Decentralised (operator/JWT) auth set up as `nsc` would: an operator, a system account and
/// an account with JetStream that it signed, and a user of that account in a `.creds` file;
/// a user of an account the operator never signed is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_file_auth_runs_a_job() {
    let operator = nkeys::KeyPair::new_operator();
    let operator_jwt = jwt(
        json!({"sub": operator.public_key(), "name": "baton-test", "nats": {"type": "operator"}}),
        &operator,
    );
    let account_jwt = |account: &nkeys::KeyPair, name: &str, limits: serde_json::Value| {
        let claims = json!({
            "sub": account.public_key(),
            "name": name,
            "nats": {"type": "account", "limits": limits},
        });
        jwt(claims, &operator)
    };
    let nats_limits = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
        "exports": -1, "wildcards": true, "conn": -1, "leaf": -1});
    let mut jetstream_limits = nats_limits.clone();
    for limit in ["mem_storage", "disk_storage", "streams", "consumer"] {
        jetstream_limits[limit] = json!(-1);
    }
    // JetStream will not start in operator mode without a system account.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = account_jwt(&system, "SYS", nats_limits);
    // JetStream is on for an account whose limits give it storage.
    let account = nkeys::KeyPair::new_account();
    let baton_jwt = account_jwt(&account, "baton", jetstream_limits);
    let dir = tempfile::tempdir().unwrap();
    let (creds, _) = creds_file(dir.path(), "baton", &account);
    let nats = baton_harness::NatsOptions {
        extra_config: format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {system_jwt}\n  {baton}: {baton_jwt}\n}}\n",
            sys = system.public_key(),
            baton = account.public_key(),
        ),
        ..Default::default()
    };
    let mut fleet = Fleet::start_with(nats, RedisOptions::default(), |server| NatsOptions {
        url: server.url(),
        creds: Some(creds.clone()),
        ..NatsOptions::default()
    })
    .await;
    let service = fleet.worker_nats.clone();
    coordinator_nats(&mut fleet, service);
    fleet.spawn_coordinator();
    fleet.wait_ready().await;
    fleet.spawn_sim("sim");
    run_job(&fleet, "sim").await;

    // A user signed by an account the operator never signed is refused, at once.
    let (stranger, seed) = creds_file(dir.path(), "stranger", &nkeys::KeyPair::new_account());
    let stranger = NatsOptions {
        url: fleet.nats.url(),
        creds: Some(stranger),
        ..NatsOptions::default()
    };
    let error = tokio::time::timeout(Duration::from_secs(15), baton_nats::connect(&stranger))
        .await
        .expect("refused credentials are not retried")
        .unwrap_err()
        .to_string();
    assert!(!error.contains(&seed), "the error shows the seed");
    assert!(error.contains("authorization violation"), "{error}");
}

/// A throwaway CA, and a certificate signed by it for 127.0.0.1/localhost that serves as
/// both the servers' and the clients' certificate.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: OpenSSL (Redis) takes a certificate whose issuer is its own subject
        // for a self-signed one and rejects it.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "baton test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "baton test");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_nats_and_redis_runs_a_job() {
    let pki = Pki::new();
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("cert.pem"),
        pki.path("key.pem"),
    );
    let nats = baton_harness::NatsOptions {
        extra_config: format!(
            "tls {{\n  cert_file: {cert:?}\n  key_file: {key:?}\n  ca_file: {ca:?}\n  verify: true\n}}"
        ),
        ..Default::default()
    };
    // Redis keeps its plain port for the harness's readiness probe; Baton uses the TLS port.
    let tls_port = baton_harness::free_port().unwrap();
    let redis = RedisOptions {
        extra_config: format!(
            "tls-port {tls_port}\ntls-cert-file {cert:?}\ntls-key-file {key:?}\n\
             tls-ca-cert-file {ca:?}\ntls-auth-clients yes\n"
        ),
        ..Default::default()
    };
    let tls = |server: &NatsServer| NatsOptions {
        url: format!("tls://127.0.0.1:{}", server.port()),
        tls_ca: Some(ca.clone()),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        ..NatsOptions::default()
    };
    let mut fleet = Fleet::start_with(nats, redis, tls).await;
    fleet.coordinator_options.redis_url = format!("rediss://127.0.0.1:{tls_port}");
    fleet.coordinator_options.redis_tls_ca = Some(ca.clone());
    fleet.coordinator_options.redis_tls_cert = Some(cert.clone());
    fleet.coordinator_options.redis_tls_key = Some(key.clone());
    fleet.spawn_coordinator();
    fleet.wait_ready().await;
    fleet.spawn_sim("sim");
    run_job(&fleet, "sim").await;

    // A client that does not trust the server's CA fails at once with a TLS error.
    let untrusting = NatsOptions {
        tls_ca: None,
        tls_required: true,
        ..tls(&fleet.nats)
    };
    let error = tokio::time::timeout(Duration::from_secs(15), baton_nats::connect(&untrusting))
        .await
        .expect("a TLS failure is not retried")
        .unwrap_err()
        .to_string();
    assert!(error.contains("TLS"), "{error}");
}

const LP_PASSWORDS: [(&str, &str); 5] = [
    ("BATON_NATS_COORDINATOR_PASSWORD", "coordinator-pw"),
    ("BATON_NATS_AGENT_NLU_PASSWORD", "nlu-pw"),
    ("BATON_NATS_AGENT_SQL_PASSWORD", "sql-pw"),
    ("BATON_NATS_CLIENT_PASSWORD", "client-pw"),
    ("BATON_NATS_OPERATOR_PASSWORD", "operator-pw"),
];

/// A user of the least-privilege config, with the inbox prefix its permissions expect.
fn lp_user(url: &str, user: &str, password: &str, inbox: &str) -> NatsOptions {
    NatsOptions {
        inbox_prefix: Some(inbox.to_owned()),
        ..nats_user(url, user, password)
    }
}

/// Waits for the server to report a permissions violation on `subject` to this connection.
async fn violation(events: &mut tokio::sync::mpsc::UnboundedReceiver<String>, subject: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if event.contains("Permissions Violation") && event.contains(subject) {
            return;
        }
        seen.push(event);
    }
    panic!("no permissions violation for {subject}; events: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privilege_config_confines_an_agent_to_its_own_tasks() {
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/nats-least-privilege.conf"
    ))
    .unwrap();
    // Loaded as it is: the harness's port and store dir override the file's, and the
    // passwords come from the server's environment, as the file says.
    let nats = baton_harness::NatsOptions {
        extra_config: config,
        env: LP_PASSWORDS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let mut fleet = Fleet::start_with(nats, RedisOptions::default(), |server| {
        lp_user(&server.url(), "client", "client-pw", "_INBOX_client")
    })
    .await;
    let url = fleet.nats.url();
    let coordinator = lp_user(&url, "coordinator", "coordinator-pw", "_INBOX_coordinator");
    coordinator_nats(&mut fleet, coordinator.clone());
    fleet.worker_nats = lp_user(&url, "agent-nlu", "nlu-pw", "_INBOX_nlu");
    fleet.spawn_coordinator();
    fleet.wait_ready().await;
    fleet.spawn_sim("nlu");

    // Agent A (nlu) serves its tasks with nothing but its own permissions; the client sees
    // the job end on `baton.jobs.ended.>`.
    let ends = fleet.record_ends().await;
    run_job(&fleet, "nlu").await;
    let started = Instant::now();
    while ends.all().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the client saw no job end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = std::fs::read_to_string(fleet.nats.dir().join("nats.log")).unwrap();
    assert!(
        !log.contains("Violation"),
        "a Baton process needed more than the config grants:\n{log}"
    );

    // A task for agent B (sql) waits in B's consumer.
    let admin = baton_nats::connect(&coordinator).await.unwrap();
    let js = jetstream::new(admin.clone());
    let sql = AgentName::new("sql").unwrap();
    let mut b_consumer = baton_nats::agent_consumer(&js, &sql, Default::default())
        .await
        .unwrap();
    fleet.submit(plan(&[("q", "sql", &[])]), json!({})).await;
    let started = Instant::now();
    while b_consumer.info().await.unwrap().num_pending != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B's task never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Agent A's credentials, on a bare connection that records what the server says.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let (options, urls) = lp_user(&url, "agent-nlu", "nlu-pw", "_INBOX_nlu")
        .client_options()
        .unwrap();
    let a = options
        .request_timeout(Some(Duration::from_secs(2)))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event.to_string());
            }
        })
        .connect(urls)
        .await
        .unwrap();
    // What A may do works on this connection...
    let own = a
        .request(
            "$JS.API.CONSUMER.INFO.BATON_TASKS.baton-agent-nlu",
            "".into(),
        )
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&own.payload).contains("\"error\""));

    // ...pulling B's tasks does not,
    let pull_b = "$JS.API.CONSUMER.MSG.NEXT.BATON_TASKS.baton-agent-sql";
    let pulled = a
        .request(pull_b, r#"{"batch": 1, "expires": 1000000000}"#.into())
        .await;
    assert!(pulled.is_err(), "A pulled from B's consumer: {pulled:?}");
    violation(&mut events, pull_b).await;
    let info = b_consumer.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (1, 0));

    // ...nor publishing B's results,
    a.publish("baton.results.sql", "{}".into()).await.unwrap();
    a.flush().await.unwrap();
    violation(&mut events, "baton.results.sql").await;

    // ...nor deleting a stream,
    let delete = "$JS.API.STREAM.DELETE.BATON_TASKS";
    assert!(a.request(delete, "".into()).await.is_err());
    violation(&mut events, delete).await;
    assert!(js.get_stream(subject::stream::TASKS).await.is_ok());

    // ...nor reading another user's replies.
    let _sneak = a.subscribe("_INBOX_client.>").await.unwrap();
    violation(&mut events, "_INBOX_client.>").await;
}

const MARKER: &str = "Xq7MarkerOfASecret";

/// Runs a process that should fail at startup; returns its output once it exits.
fn run_failing(mut command: Command) -> (std::process::ExitStatus, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{command:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

fn baton_process(binary: &str, log_dir: Option<&Path>, name: &str) -> Command {
    let mut command = Command::new(binary_path(binary));
    command.env("RUST_LOG", "debug").stdin(Stdio::null());
    if let Some(dir) = log_dir {
        let file = |suffix: &str| std::fs::File::create(dir.join(format!("{name}.{suffix}")));
        command
            .stdout(file("out").unwrap())
            .stderr(file("err").unwrap());
    }
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_or_events() {
    let nats = baton_harness::NatsOptions {
        extra_config: format!(
            r#"authorization {{
  users: [
    {{user: coordinator, password: "c-{MARKER}"}}
    {{user: worker, password: "w-{MARKER}"}}
    {{user: client, password: "client-pw"}}
  ]
}}"#
        ),
        ..Default::default()
    };
    let redis = RedisOptions {
        extra_config: redis_acl(&format!("r-{MARKER}")),
        ..Default::default()
    };
    let fleet = Fleet::start_with(nats, redis, |server| {
        nats_user(&server.url(), "client", "client-pw")
    })
    .await;
    let nats_url = fleet.nats.url();
    let redis_at = format!("127.0.0.1:{}", fleet.redis.port());
    let worker_url =
        |password: &str| nats_url.replace("nats://", &format!("nats://worker:{password}@"));

    // Failed starts, with the secret in flags, variables and URLs.
    let mut coordinator = baton_process("baton", None, "");
    coordinator
        .arg("coordinator")
        .env("BATON_NATS_URL", &nats_url)
        .env("BATON_NATS_USER", "coordinator")
        .env("BATON_NATS_PASSWORD", format!("wrong-{MARKER}"))
        .env(
            "BATON_REDIS_URL",
            format!("redis://baton:r-{MARKER}@{redis_at}"),
        );
    let (status, output) = run_failing(coordinator);
    assert!(
        !status.success() && output.contains("authorization violation"),
        "{output}"
    );
    assert!(!output.contains(MARKER), "{output}");

    let mut coordinator = baton_process("baton", None, "");
    coordinator
        .args(["coordinator", "--nats-user", "coordinator"])
        .env("BATON_NATS_URL", &nats_url)
        .env("BATON_NATS_PASSWORD", format!("c-{MARKER}"))
        .env(
            "BATON_REDIS_URL",
            format!("redis://baton:wrong-{MARKER}@{redis_at}"),
        );
    let (status, output) = run_failing(coordinator);
    assert!(
        !status.success() && output.contains("baton:[redacted]@"),
        "{output}"
    );
    assert!(!output.contains(MARKER), "{output}");

    let mut worker = baton_process("baton-agent-sim", None, "");
    worker
        .args(["--type", "sec", "--nats-url"])
        .arg(worker_url(&format!("wrong-{MARKER}")));
    let (status, output) = run_failing(worker);
    assert!(
        !status.success() && output.contains("authorization violation"),
        "{output}"
    );
    assert!(!output.contains(MARKER), "{output}");

    // A job, with the coordinator and a worker as processes logging at debug level.
    let mut events = fleet.client.subscribe(subject::EVENTS_ALL).await.unwrap();
    fleet.client.flush().await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut coordinator = baton_process("baton", Some(logs.path()), "coordinator");
    coordinator
        .arg("coordinator")
        .env("BATON_NATS_URL", &nats_url)
        .env("BATON_NATS_USER", "coordinator")
        .env("BATON_NATS_PASSWORD", format!("c-{MARKER}"))
        .env("BATON_REDIS_URL", format!("redis://{redis_at}"))
        .env("BATON_REDIS_USER", "baton")
        .env("BATON_REDIS_PASSWORD", format!("r-{MARKER}"));
    let mut coordinator = coordinator.spawn().unwrap();
    let mut worker = baton_process("baton-agent-sim", Some(logs.path()), "worker");
    worker
        .args(["--type", "sec"])
        .env("BATON_NATS_URL", worker_url(&format!("w-{MARKER}")));
    let mut worker = worker.spawn().unwrap();
    fleet.wait_ready().await;
    run_job(&fleet, "sec").await;

    for child in [&mut coordinator, &mut worker] {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, baton_harness::Signal::SIGTERM).unwrap();
    }
    let (coordinator, worker) =
        tokio::task::spawn_blocking(move || (coordinator.wait().unwrap(), worker.wait().unwrap()))
            .await
            .unwrap();
    assert!(coordinator.success() && worker.success());

    let mut payloads = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(200), events.next()).await
    {
        payloads.push(String::from_utf8_lossy(&message.payload).into_owned());
    }
    assert!(payloads.len() >= 4, "too few events: {payloads:?}");
    for payload in &payloads {
        assert!(!payload.contains(MARKER), "{payload}");
    }
    for name in [
        "coordinator.out",
        "coordinator.err",
        "worker.out",
        "worker.err",
    ] {
        let text = std::fs::read_to_string(logs.path().join(name)).unwrap();
        assert!(!text.contains(MARKER), "{name}:\n{text}");
    }
    // The logs were written at debug level (including the NATS client's own), so the check
    // above had something to look at.
    let err = std::fs::read_to_string(logs.path().join("coordinator.err")).unwrap();
    assert!(
        err.contains("DEBUG") && err.contains("Coordinator ready"),
        "{err}"
    );
    let err = std::fs::read_to_string(logs.path().join("worker.err")).unwrap();
    assert!(
        err.contains("DEBUG") && err.contains("Worker ready"),
        "{err}"
    );
}

#[test]
fn bad_security_settings_exit_64_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "x").unwrap();
    let cases: [(&str, Vec<String>, &str); 4] = [
        (
            "baton-agent-sim",
            vec!["--nats-tls-cert".into(), cert.display().to_string()],
            "together",
        ),
        (
            "baton",
            vec![
                "--nats-user=u".into(),
                format!("--nats-password={MARKER}"),
                format!("--nats-token={MARKER}"),
                "status".into(),
                "00000000-0000-0000-0000-000000000000".into(),
            ],
            "one NATS authentication method",
        ),
        (
            "baton",
            vec![
                "coordinator".into(),
                "--nats-creds=/nonexistent/x.creds".into(),
            ],
            "cannot read NATS credentials file",
        ),
        (
            "baton",
            vec![
                "coordinator".into(),
                "--redis-tls-ca".into(),
                cert.display().to_string(),
            ],
            "rediss://",
        ),
    ];
    for (binary, args, expected) in cases {
        let mut command = Command::new(binary_path(binary));
        command.args(&args).env("RUST_LOG", "debug");
        let (status, output) = run_failing(command);
        assert_eq!(status.code(), Some(64), "{binary} {args:?}: {output}");
        assert!(output.contains(expected), "{binary} {args:?}: {output}");
        assert!(!output.contains(MARKER), "{output}");
    }
    // `--help` shows which variables are read, never their values.
    let output = Command::new(binary_path("baton-agent-sim"))
        .arg("--help")
        .env("BATON_NATS_PASSWORD", MARKER)
        .env("BATON_NATS_URL", format!("nats://u:{MARKER}@h"))
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("BATON_NATS_PASSWORD") && !help.contains(MARKER),
        "{help}"
    );
}
