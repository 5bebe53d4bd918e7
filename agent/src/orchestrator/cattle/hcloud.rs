//! The Hetzner Cloud backend: create a server (name, type, image, location, labels, user_data),
//! delete it, list servers by label selector (all pages). The API token is read from a secrets
//! file at each call, so rotation needs no restart, and it is never logged. Only `https://` is
//! accepted, except loopback `http://` for the contract tests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::json;

use super::{CattleError, Server, ServerSpec};
use crate::secret::SecretString;

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Hetzner Cloud client.
pub struct Hcloud {
    api_url: String,
    token_file: PathBuf,
    image: String,
    server_type: String,
    location: String,
    client: HttpsClient,
}

impl std::fmt::Debug for Hcloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hcloud")
            .field("api_url", &self.api_url)
            .field("token_file", &self.token_file)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
struct ApiServer {
    id: u64,
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct CreateResponse {
    server: ApiServer,
}

#[derive(Debug, Deserialize)]
struct Pagination {
    next_page: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Meta {
    pagination: Pagination,
}

#[derive(Debug, Deserialize)]
struct ListResponse {
    servers: Vec<ApiServer>,
    meta: Option<Meta>,
}

#[derive(Debug, Deserialize)]
struct ApiErrorBody {
    code: String,
    message: String,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    error: ApiErrorBody,
}

impl From<ApiServer> for Server {
    fn from(s: ApiServer) -> Self {
        Server {
            id: s.id.to_string(),
            name: s.name,
            labels: s.labels,
        }
    }
}

impl Hcloud {
    pub fn new(
        api_url: String,
        token_file: PathBuf,
        image: String,
        server_type: String,
        location: String,
    ) -> Result<Self, CattleError> {
        let loopback_http = api_url.starts_with("http://127.0.0.1")
            || api_url.starts_with("http://[::1]")
            || api_url.starts_with("http://localhost");
        if !api_url.starts_with("https://") && !loopback_http {
            return Err(CattleError::Unavailable(format!(
                "hcloud api url '{api_url}' must use https"
            )));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(Hcloud {
            api_url: api_url.trim_end_matches('/').to_string(),
            token_file,
            image,
            server_type,
            location,
            client,
        })
    }

    fn token(&self) -> Result<SecretString, CattleError> {
        let raw = std::fs::read_to_string(&self.token_file).map_err(|e| {
            CattleError::Unavailable(format!(
                "cannot read hcloud token '{}': {e}",
                self.token_file.display()
            ))
        })?;
        let t = raw.trim().to_string();
        if t.is_empty() {
            return Err(CattleError::Unavailable(format!(
                "hcloud token file '{}' is empty",
                self.token_file.display()
            )));
        }
        Ok(SecretString::new(t))
    }

    async fn call(
        &self,
        method: &str,
        path_q: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, Bytes), CattleError> {
        let token = self.token()?;
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path_q}", self.api_url))
            .header("authorization", format!("Bearer {}", token.expose()))
            .header(
                "user-agent",
                concat!("clawdlets/", env!("CARGO_PKG_VERSION")),
            );
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = b
            .body(Full::new(body))
            .map_err(|e| CattleError::Unavailable(e.to_string()))?;
        let fut = self.client.request(req);
        let resp = tokio::time::timeout(std::time::Duration::from_secs(30), fut)
            .await
            .map_err(|_| CattleError::Unavailable("hcloud api timed out".into()))?
            .map_err(|e| CattleError::Unavailable(format!("hcloud api: {e}")))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), 8 * 1024 * 1024)
            .collect()
            .await
            .map_err(|e| CattleError::Unavailable(format!("hcloud api body: {e}")))?
            .to_bytes();
        if !(200..300).contains(&status) {
            let err: Option<ApiError> = serde_json::from_slice(&bytes).ok();
            return Err(match err {
                Some(e) => CattleError::Api {
                    code: e.error.code,
                    message: e.error.message.chars().take(200).collect(),
                },
                None => CattleError::Api {
                    code: format!("http_{status}"),
                    message: "unexpected response".into(),
                },
            });
        }
        Ok((status, bytes))
    }

    pub async fn create(&self, spec: &ServerSpec) -> Result<Server, CattleError> {
        let body = json!({
            "name": spec.name,
            "server_type": spec.server_type.as_deref().unwrap_or(&self.server_type),
            "image": spec.image.as_deref().unwrap_or(&self.image),
            "location": spec.location.as_deref().unwrap_or(&self.location),
            "start_after_create": true,
            "user_data": spec.user_data,
            "labels": spec.labels,
            "public_net": {"enable_ipv4": true, "enable_ipv6": true},
        });
        let (_, bytes) = self.call("POST", "/servers", Some(body)).await?;
        let r: CreateResponse = serde_json::from_slice(&bytes).map_err(|e| CattleError::Api {
            code: "decode".into(),
            message: e.to_string(),
        })?;
        Ok(r.server.into())
    }

    pub async fn delete(&self, id: &str) -> Result<(), CattleError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CattleError::Payload(format!("'{id}' is not a server id")));
        }
        match self.call("DELETE", &format!("/servers/{id}"), None).await {
            Ok(_) => Ok(()),
            // Already gone is what we wanted.
            Err(CattleError::Api { code, .. }) if code == "not_found" => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self, label_selector: &str) -> Result<Vec<Server>, CattleError> {
        let mut out = Vec::new();
        let mut page = 1u32;
        loop {
            let q = format!(
                "/servers?label_selector={}&page={page}&per_page=50",
                encode(label_selector)
            );
            let (_, bytes) = self.call("GET", &q, None).await?;
            let r: ListResponse = serde_json::from_slice(&bytes).map_err(|e| CattleError::Api {
                code: "decode".into(),
                message: e.to_string(),
            })?;
            out.extend(r.servers.into_iter().map(Server::from));
            match r.meta.and_then(|m| m.pagination.next_page) {
                Some(n) if n > page && page < 1000 => page = n,
                _ => break,
            }
        }
        Ok(out)
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Contract tests: a local HTTP server answers with the recorded shapes from
    //! `tests/fixtures/hcloud/` and checks what the client sends.
    use super::*;
    use std::sync::{Arc, Mutex};

    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    const CREATE: &str = include_str!("../../../tests/fixtures/hcloud/create_server_201.json");
    const DELETE: &str = include_str!("../../../tests/fixtures/hcloud/delete_server_200.json");
    const PAGE1: &str = include_str!("../../../tests/fixtures/hcloud/list_servers_page1.json");
    const PAGE2: &str = include_str!("../../../tests/fixtures/hcloud/list_servers_page2.json");
    const UNIQUE: &str = include_str!("../../../tests/fixtures/hcloud/error_uniqueness_409.json");
    const NOT_FOUND: &str = include_str!("../../../tests/fixtures/hcloud/error_not_found_404.json");

    type Seen = Arc<Mutex<Vec<(String, String, String, serde_json::Value)>>>;

    async fn server() -> (String, Seen) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = l.accept().await.unwrap();
                let seen = s2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let method = req.method().to_string();
                            let uri = req.uri().to_string();
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_string())
                                .unwrap_or_default();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let json: serde_json::Value =
                                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                            seen.lock().unwrap().push((
                                method.clone(),
                                uri.clone(),
                                auth,
                                json.clone(),
                            ));
                            let (status, text) = match (method.as_str(), uri.as_str()) {
                                ("POST", "/v1/servers") if json["name"] == "taken" => (409, UNIQUE),
                                ("POST", "/v1/servers") => (201, CREATE),
                                ("DELETE", "/v1/servers/42") => (200, DELETE),
                                ("DELETE", _) => (404, NOT_FOUND),
                                ("GET", u) if u.contains("page=1&") => (200, PAGE1),
                                ("GET", u) if u.contains("page=2&") => (200, PAGE2),
                                _ => (500, "{}"),
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(text)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (format!("http://127.0.0.1:{}/v1", addr.port()), seen)
    }

    fn client(url: &str, dir: &tempfile::TempDir) -> Hcloud {
        let tf = dir.path().join("hcloud_token");
        std::fs::write(&tf, "test-hcloud-token\n").unwrap();
        Hcloud::new(
            url.into(),
            tf,
            "debian-12".into(),
            "cx22".into(),
            "nbg1".into(),
        )
        .unwrap()
    }

    fn spec(name: &str) -> ServerSpec {
        let mut labels = BTreeMap::new();
        labels.insert("managed-by".to_string(), "clawdlets".to_string());
        labels.insert("expires-at".to_string(), "1795000000".to_string());
        ServerSpec {
            name: name.into(),
            user_data: "#cloud-config\n{}\n".into(),
            labels,
            image: None,
            server_type: None,
            location: Some("fsn1".into()),
        }
    }

    #[tokio::test]
    async fn create_sends_the_documented_request_and_parses_the_response() {
        let (url, seen) = server().await;
        let d = tempfile::tempdir().unwrap();
        let c = client(&url, &d);
        let s = c.create(&spec("clf-rex-0198ab")).await.unwrap();
        assert_eq!(s.id, "42");
        assert_eq!(s.labels["managed-by"], "clawdlets");
        let (m, u, auth, body) = seen.lock().unwrap()[0].clone();
        assert_eq!((m.as_str(), u.as_str()), ("POST", "/v1/servers"));
        assert_eq!(auth, "Bearer test-hcloud-token");
        assert_eq!(body["server_type"], "cx22");
        assert_eq!(body["image"], "debian-12");
        assert_eq!(body["location"], "fsn1");
        assert_eq!(body["start_after_create"], true);
        assert_eq!(body["user_data"], "#cloud-config\n{}\n");
        assert_eq!(body["labels"]["expires-at"], "1795000000");
    }

    #[tokio::test]
    async fn api_errors_carry_code_and_message() {
        let (url, _) = server().await;
        let d = tempfile::tempdir().unwrap();
        let err = client(&url, &d).create(&spec("taken")).await.unwrap_err();
        match err {
            CattleError::Api { code, message } => {
                assert_eq!(code, "uniqueness_error");
                assert!(message.contains("already used"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn delete_treats_not_found_as_done() {
        let (url, seen) = server().await;
        let d = tempfile::tempdir().unwrap();
        let c = client(&url, &d);
        c.delete("42").await.unwrap();
        c.delete("7").await.unwrap();
        assert!(c.delete("../x").await.is_err());
        assert_eq!(seen.lock().unwrap()[0].1, "/v1/servers/42");
    }

    #[tokio::test]
    async fn list_follows_pagination_with_an_encoded_label_selector() {
        let (url, seen) = server().await;
        let d = tempfile::tempdir().unwrap();
        let all = client(&url, &d).list("managed-by=clawdlets").await.unwrap();
        assert_eq!(
            all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            vec!["42", "43"]
        );
        assert_eq!(all[1].labels["expires-at"], "1700000000");
        let uris: Vec<String> = seen.lock().unwrap().iter().map(|s| s.1.clone()).collect();
        assert_eq!(
            uris[0],
            "/v1/servers?label_selector=managed-by%3Dclawdlets&page=1&per_page=50"
        );
        assert_eq!(uris.len(), 2);
    }

    #[test]
    fn plain_http_is_refused_except_loopback() {
        let d = tempfile::tempdir().unwrap();
        assert!(
            Hcloud::new(
                "http://api.example.com/v1".into(),
                d.path().join("t"),
                "i".into(),
                "t".into(),
                "l".into()
            )
            .is_err()
        );
    }
}
