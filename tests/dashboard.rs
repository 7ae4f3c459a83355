//! The web dashboard in a real browser: an HA environment on the local
//! provider (3 managers, real processes), headless Debian Chromium driven
//! by chromium-driver (WebDriver, through fantoccini), trusting the
//! cluster by pinning the CA's public key. It logs in through the link
//! `juju dashboard` prints, sees 3 managers alive; a manager is SIGKILLed
//! and the open page shows it down, then its replacement alive, with no
//! reload. Screenshots (desktop, and 390 px wide) go to
//! `target/dashboard/`. Requests without a session, with a reused or
//! expired login link, or with a forged cookie get 401 and no body.
//!
//! Skips (with the reason printed) only when Chromium or chromedriver is
//! missing and `CI` is unset; under CI a missing browser fails the test.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::env::Env;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest any awaited browser-visible change may take before the test
/// fails (a failure bound, not a speed assertion: the replacement needs
/// the keeper's grace and a new process).
const BROWSER_CAP_MS: u64 = 60_000;
/// The keeper's grace before it replaces a dead manager, for this test.
const GRACE_MS: &str = "3000";
/// The most a raw HTTPS answer read by this test may be.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

impl Env {
    fn dashboard(&self) -> Value {
        serde_json::from_str(&self.ok(&["dashboard", "--format", "json"])).unwrap()
    }

    /// The pid of the instance serving at `addr`.
    fn pid_at(&self, addr: &str) -> i32 {
        let found = self
            .instances()
            .into_iter()
            .find(|i| i["address"] == addr && i["state"] == "running")
            .unwrap_or_else(|| panic!("no running instance at {addr}"));
        found["pid"].as_i64().unwrap() as i32
    }
}

/// chromedriver, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Chromium and chromedriver, or None (after printing why) when the test
/// may skip; under CI their absence is a failure.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = which("chromium").or_else(|| which("chromium-browser"));
    let driver = which("chromedriver");
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "CI must run the browser test: install chromium and chromium-driver (.ci/run does)"
            )
        }
        _ => {
            eprintln!(
                "SKIPPED tests/dashboard.rs: chromium or chromedriver not found on PATH \
                 (apt-get install chromium chromium-driver); CI runs it"
            );
            None
        }
    }
}

/// Starts chromedriver on a free port and waits until it accepts.
fn start_driver(bin: &Path) -> (Driver, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_millis(common::EVENT_CAP_MS);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Driver(child), format!("http://127.0.0.1:{port}"))
}

async fn open_browser(chromium: &Path, webdriver: &str, spki: &str, profile: &Path) -> Client {
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium.to_str().unwrap(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
                format!("--ignore-certificate-errors-spki-list={spki}"),
            ],
        }
    });
    let Value::Object(caps) = caps else { unreachable!() };
    let http = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(http).capabilities(caps).connect(webdriver).await.expect("webdriver session")
}

/// Evaluates `script` (a JS expression) until it returns `want`.
async fn until(c: &Client, what: &str, script: &str, want: Value) -> Value {
    let deadline = Instant::now() + Duration::from_millis(BROWSER_CAP_MS);
    loop {
        let got = c.execute(&format!("return {script};"), vec![]).await.expect("script runs");
        if got == want {
            return got;
        }
        if Instant::now() > deadline {
            let page = c.source().await.unwrap_or_default();
            panic!("timed out waiting for {what}: {script} = {got}, want {want}; page:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(css: &str) -> String {
    format!("document.querySelectorAll({css:?}).length")
}

/// One HTTPS GET with the cluster CA as the only root (the manager's name
/// is `jujud`, not the address): (status, body length).
async fn get(ca_pem: &str, url: &str, cookie: Option<&str>) -> (u16, usize) {
    let rest = url.strip_prefix("https://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let addr: SocketAddr = host.parse().unwrap();
    let ca = jujud::pki::ClusterCa { cert_pem: ca_pem.into(), key_pem: String::new() };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(jujud::pki::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(jujud::pki::SERVER_NAME).unwrap();
    let mut s = tls.connect(name.to_owned(), tcp).await.expect("TLS with the cluster CA");
    let cookie = cookie.map(|c| format!("Cookie: jujud_dashboard={c}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut limited = (&mut s).take(MAX_ANSWER_BYTES);
    let read = limited.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_millis(common::EVENT_CAP_MS), read).await;
    let text = String::from_utf8_lossy(&answer);
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    (code, body)
}

fn save(name: &str, png: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_a_manager_die_and_its_replacement_without_a_reload() {
    let Some((chromium, chromedriver)) = browser() else { return };
    let env = Env::bootstrap(3);
    let client_file = env.client();
    let three_alive = |st: &Value| {
        st["members"].as_array().unwrap().iter().filter(|m| m["state"] == "alive").count() == 3
    };
    common::agent::wait_status(&client_file, "3 managers alive", three_alive);
    env.ok(&["controller-config", &format!("ha-grace-ms={GRACE_MS}")]);
    let ca_pem = jujud::runtime::clientfile::ClientFile::load(&client_file).unwrap().ca_cert;
    // A link left unused until it expires, checked at the end.
    let (to_expire, minted) = (env.dashboard(), Instant::now());
    let link = env.dashboard();
    let (url, login) = (link["url"].as_str().unwrap(), link["login_url"].as_str().unwrap());
    let spki = link["ca_spki_sha256_base64"].as_str().unwrap();

    let (_driver, webdriver) = start_driver(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let c = open_browser(&chromium, &webdriver, spki, profile.path()).await;
    c.goto(login).await.expect("open the login link");
    assert_eq!(
        c.current_url().await.unwrap().as_str(),
        url,
        "the login redirects to the dashboard"
    );
    until(&c, "3 managers alive", &count("#managers tr[data-state=alive]"), json!(3)).await;
    until(&c, "HA 3/3", "document.getElementById('ha').textContent", json!("HA 3/3")).await;
    c.execute("window.notReloaded = true; return 0;", vec![]).await.unwrap();
    save("desktop.png", &c.screenshot().await.unwrap());

    // Kill a manager other than the one serving this page and the one
    // that minted the link left to expire (checked on it at the end: a
    // login link is good only on the manager that minted it).
    let spared: Vec<IpAddr> = [url, to_expire["url"].as_str().unwrap()]
        .iter()
        .map(|u| u.trim_start_matches("https://").trim_end_matches('/'))
        .map(|a| a.parse::<SocketAddr>().unwrap().ip())
        .collect();
    let st = common::agent::status(&client_file);
    let victim = st["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["role"] == "manager"
                && !spared
                    .contains(&m["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap().ip())
        })
        .unwrap()
        .clone();
    let (victim_id, victim_addr) =
        (victim["id"].as_str().unwrap(), victim["addr"].as_str().unwrap());
    let pid = env.pid_at(victim_addr);
    let killed = Instant::now();
    // SAFETY: a process this test's environment started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // Down, or already replaced: a manager that hears the revocation while
    // its own view still says suspect goes straight to replaced.
    let down = format!(
        "#managers tr[data-manager='{victim_id}'][data-state=down], \
         #managers tr[data-manager='{victim_id}'][data-state=replaced]"
    );
    until(&c, "the killed manager shown down", &count(&down), json!(1)).await;
    println!(
        "manager SIGKILLed -> shown down on the open dashboard: {} ms",
        killed.elapsed().as_millis()
    );
    until(&c, "a replacement shown alive", &count("#managers tr[data-state=alive]"), json!(3))
        .await;
    let gone = format!("#managers tr[data-manager='{victim_id}'][data-state=alive]");
    assert_eq!(c.execute(&format!("return {};", count(&gone)), vec![]).await.unwrap(), json!(0));
    println!("manager SIGKILLed -> replacement shown alive: {} ms", killed.elapsed().as_millis());
    let same_page = c.execute("return window.notReloaded === true;", vec![]).await.unwrap();
    assert_eq!(same_page, json!(true), "the page was never reloaded");
    let timeline =
        c.execute("return document.getElementById('timeline').textContent;", vec![]).await.unwrap();
    let timeline = timeline.as_str().unwrap();
    assert!(
        timeline.contains("-> down") || timeline.contains("-> replaced"),
        "timeline: {timeline}"
    );
    // The replacement's manager says its machine is started within a
    // control tick of joining; the page follows without a reload.
    let pending = "[...document.querySelectorAll('#machines tbody tr')]\
        .filter((r) => r.cells[2].textContent === 'pending').length";
    until(&c, "no controller machine pending", pending, json!(0)).await;
    save("desktop-replaced.png", &c.screenshot().await.unwrap());
    c.set_window_size(390, 844).await.unwrap();
    save("phone.png", &c.screenshot().await.unwrap());
    c.close().await.unwrap();

    // Nothing without a session: no cookie, a forged one, a reused link,
    // an expired link.
    for path in ["", "app.js", "api/snapshot", "events"] {
        assert_eq!(get(&ca_pem, &format!("{url}{path}"), None).await, (401, 0), "/{path}");
    }
    let forged = "00".repeat(32);
    assert_eq!(get(&ca_pem, &format!("{url}api/snapshot"), Some(&forged)).await, (401, 0));
    assert_eq!(get(&ca_pem, login, None).await, (401, 0), "a reused link");
    let expiry = Duration::from_millis(to_expire["expires_in_ms"].as_u64().unwrap() + 1_000);
    tokio::time::sleep(expiry.saturating_sub(minted.elapsed())).await;
    let expired = to_expire["login_url"].as_str().unwrap();
    assert_eq!(get(&ca_pem, expired, None).await, (401, 0), "an expired link");
    // A fresh link works once outside the browser too (the checks above
    // are not refusing everything).
    let fresh = env.dashboard();
    let (code, _) = get(&ca_pem, fresh["login_url"].as_str().unwrap(), None).await;
    assert_eq!(code, 303, "a fresh link logs in");
}
