//! A `reft serve` child process and a small HTTP client for it, shared by tests/serve.rs
//! and the serving benchmark (tests/bench/serve.rs).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `reft serve`, killed when dropped (a failing test leaves no server behind).
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Its stderr after the address line, read by a thread (the log).
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_reft")).arg("serve").args(args).args(["--port", "0"]).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().expect("reft serve printed nothing").unwrap();
        let base = first.strip_prefix("reft serve: listening on ").unwrap_or_else(|| panic!("unexpected first line: {first}")).to_string();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        let server = Server { child, base, log };
        // Ready only once the sessions are loaded: poll /health.
        let start = Instant::now();
        loop {
            let (status, _) = server.get("/health");
            if status == 200 {
                break;
            }
            assert_eq!(status, 503, "/health while loading");
            assert!(start.elapsed() < Duration::from_secs(120), "not ready after 2 minutes:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(120))).build().into()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let mut r = Self::agent().get(format!("{}{path}", self.base)).call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    /// POST a raw body: status, headers we look at, body.
    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Option<String>, String) {
        let mut r = Self::agent().post(format!("{}{path}", self.base)).header("content-type", "application/json").send(body).unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), retry, r.body_mut().read_to_string().unwrap())
    }

    pub fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let (status, _, text) = self.post_raw(path, &body.to_string());
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
    }

    /// A streamed POST: the `data:` payloads in order.
    pub fn post_stream(&self, path: &str, body: serde_json::Value) -> Vec<String> {
        let r = Self::agent().post(format!("{}{path}", self.base)).send(body.to_string()).unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let ct = r.headers().get("content-type").unwrap().to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        BufReader::new(r.into_body().into_reader()).lines().map_while(Result::ok).filter_map(|l| l.strip_prefix("data: ").map(str::to_string)).collect()
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    /// The server's resident memory, in MB (VmRSS).
    pub fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

