//! What the environment adds to the configuration file: `${VAR}` references in its string
//! values (for secrets), and `LOGGATE_*` variables that override settings (for containers).
//!
//! Both are pure steps on the text and on the parsed [`Config`], given the environment as a
//! map, so that [`Config::load_with_env`] can be tested without touching the process
//! environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use toml_edit::{DocumentMut, Item, Table, Value};

use super::{Config, LogFormat, SecurityProtocol};

/// Environment variables by name.
pub type Env = HashMap<String, String>;

/// The process environment (variables whose name or value is not UTF-8 are left out).
pub fn process_env() -> Env {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

/// A `${VAR}` reference that cannot be expanded, or a `LOGGATE_*` variable whose value is not
/// what its setting takes. Messages name the setting and the variable, never the value of
/// a variable that may hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{key}: environment variable {var} is not set (write ${{{var}:-default}} to give a default)")]
    Unset { key: String, var: String },
    #[error("{key}: `${{` without its closing `}}` (write `$${{` for a literal `${{`)")]
    Unterminated { key: String },
    #[error("{key}: `${{{name}}}`: {name:?} is not a variable name (letters, digits and `_`, not starting with a digit)")]
    BadName { key: String, name: String },
    #[error("environment variable {var}={value:?}: {expected}")]
    BadValue { var: String, value: String, expected: &'static str },
    #[error("environment variable {var}: the configuration has no {protocol:?} listener")]
    NoListener { var: String, protocol: SecurityProtocol },
    #[error("environment variable {var}: the configuration has several {protocol:?} listeners; set their addresses in the file")]
    SeveralListeners { var: String, protocol: SecurityProtocol },
}

/// Expands `${VAR}` and `${VAR:-default}` in every string value of a TOML document
/// (never in keys or comments, and the result is a string value whatever it holds, so a
/// secret with quotes or newlines stays one value). `${VAR}` of an unset variable is an
/// error; `${VAR:-default}` takes the default when the variable is unset or empty;
/// `$${` is a literal `${`. Text that is not valid TOML is returned as it is, for the
/// parser to report.
pub fn expand_references(text: &str, env: &Env) -> Result<String, EnvError> {
    if !text.contains("${") {
        return Ok(text.to_owned());
    }
    let Ok(mut doc) = text.parse::<DocumentMut>() else {
        return Ok(text.to_owned());
    };
    let mut changed = false;
    expand_table(doc.as_table_mut(), "", env, &mut changed)?;
    // toml_edit keeps the layout, and writes a changed string with escapes on one line,
    // so parse errors still point at the file's own line numbers.
    Ok(if changed { doc.to_string() } else { text.to_owned() })
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn expand_table(table: &mut Table, path: &str, env: &Env, changed: &mut bool) -> Result<(), EnvError> {
    for (key, item) in table.iter_mut() {
        let path = join(path, key.get());
        match item {
            Item::Value(value) => expand_value(value, &path, env, changed)?,
            Item::Table(t) => expand_table(t, &path, env, changed)?,
            Item::ArrayOfTables(tables) => {
                for (i, t) in tables.iter_mut().enumerate() {
                    expand_table(t, &format!("{path}[{i}]"), env, changed)?;
                }
            }
            Item::None => {}
        }
    }
    Ok(())
}

fn expand_value(value: &mut Value, path: &str, env: &Env, changed: &mut bool) -> Result<(), EnvError> {
    match value {
        Value::String(s) => {
            if let Some(expanded) = expand_str(s.value(), path, env)? {
                // A basic string on one line, whatever the value holds.
                let Ok(Value::String(mut new)) = basic_string(&expanded).parse::<Value>() else {
                    unreachable!("an escaped basic string is a TOML string value")
                };
                *new.decor_mut() = s.decor().clone();
                *s = new;
                *changed = true;
            }
        }
        Value::Array(values) => {
            for (i, v) in values.iter_mut().enumerate() {
                expand_value(v, &format!("{path}[{i}]"), env, changed)?;
            }
        }
        Value::InlineTable(t) => {
            for (key, v) in t.iter_mut() {
                expand_value(v, &join(path, key.get()), env, changed)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `text` as a TOML basic string: quoted, with quotes, backslashes and control
/// characters escaped.
fn basic_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One string with its references expanded; None when it has none (nor `$${`).
pub fn expand_str(text: &str, key: &str, env: &Env) -> Result<Option<String>, EnvError> {
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| EnvError::Unterminated { key: key.to_owned() })?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(EnvError::BadName { key: key.to_owned(), name: name.to_owned() });
            }
            match (env.get(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(EnvError::Unset { key: key.to_owned(), var: name.to_owned() }),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// The settings `LOGGATE_*` variables override, for `check-config` and the README:
/// (variable, setting). `<PROTOCOL>` is one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL.
pub const OVERRIDES: &[(&str, &str)] = &[
    ("LOGGATE_DATA_DIR", "data_dir"),
    ("LOGGATE_NODE_ID", "node_id"),
    ("LOGGATE_BIND", "bind of the first listener"),
    ("LOGGATE_BIND_<PROTOCOL>", "bind of the listener of that protocol"),
    ("LOGGATE_ADVERTISED_HOST", "host of every listener's advertised address (each keeps its port)"),
    ("LOGGATE_ADVERTISED", "advertised of the first listener"),
    ("LOGGATE_ADVERTISED_<PROTOCOL>", "advertised of the listener of that protocol"),
    ("LOGGATE_TLS_CERT", "[tls] cert"),
    ("LOGGATE_TLS_KEY", "[tls] key"),
    ("LOGGATE_TLS_GENERATE", "[tls] generate"),
    ("LOGGATE_METRICS_BIND", "[metrics] bind (`off`: no endpoint)"),
    ("LOGGATE_LOG_FORMAT", "[log] format"),
    ("LOGGATE_CLICKHOUSE_URLS", "[clickhouse] urls (comma-separated)"),
    ("LOGGATE_CLICKHOUSE_USER", "[clickhouse] user"),
    ("LOGGATE_CLICKHOUSE_PASSWORD", "[clickhouse] password"),
    ("LOGGATE_CLICKHOUSE_CA_FILE", "[clickhouse] ca_file"),
];

const PROTOCOLS: [(&str, SecurityProtocol); 4] = [
    ("PLAINTEXT", SecurityProtocol::Plaintext),
    ("SSL", SecurityProtocol::Ssl),
    ("SASL_PLAINTEXT", SecurityProtocol::SaslPlaintext),
    ("SASL_SSL", SecurityProtocol::SaslSsl),
];

/// The override variables set (not empty) in `env`, in the order they are applied.
pub fn overrides_set(env: &Env) -> Vec<String> {
    let mut set = Vec::new();
    for (var, _) in OVERRIDES {
        match var.strip_suffix("<PROTOCOL>") {
            Some(prefix) => {
                for (name, _) in PROTOCOLS {
                    let var = format!("{prefix}{name}");
                    if get(env, &var).is_some() {
                        set.push(var);
                    }
                }
            }
            None if get(env, var).is_some() => set.push((*var).to_owned()),
            None => {}
        }
    }
    set
}

/// A variable's value; empty counts as unset (as `VAR=` in a compose file means).
fn get<'a>(env: &'a Env, var: &str) -> Option<&'a str> {
    env.get(var).map(String::as_str).filter(|v| !v.is_empty())
}

fn bad(var: &str, value: &str, expected: &'static str) -> EnvError {
    EnvError::BadValue { var: var.to_owned(), value: value.to_owned(), expected }
}

fn socket_addr(var: &str, value: &str) -> Result<SocketAddr, EnvError> {
    value.trim().parse().map_err(|_| bad(var, value, "expected an IP address and port, e.g. 0.0.0.0:10012"))
}

fn host_port(var: &str, value: &str) -> Result<String, EnvError> {
    let value = value.trim();
    match crate::server::parse_host_port(value) {
        Some(_) => Ok(value.to_owned()),
        None => Err(bad(var, value, "expected host:port, e.g. logs.example.com:10012")),
    }
}

/// Applies the `LOGGATE_*` overrides to a parsed configuration (its default listener
/// already filled in).
pub fn apply_overrides(config: &mut Config, env: &Env) -> Result<(), EnvError> {
    if let Some(v) = get(env, "LOGGATE_DATA_DIR") {
        config.data_dir = PathBuf::from(v);
    }
    if let Some(v) = get(env, "LOGGATE_NODE_ID") {
        config.node_id = v.trim().parse().map_err(|_| bad("LOGGATE_NODE_ID", v, "expected a number 0..=255"))?;
    }
    apply_listener_overrides(config, env)?;
    if let Some(v) = get(env, "LOGGATE_TLS_CERT") {
        config.tls.cert = Some(PathBuf::from(v));
    }
    if let Some(v) = get(env, "LOGGATE_TLS_KEY") {
        config.tls.key = Some(PathBuf::from(v));
    }
    if let Some(v) = get(env, "LOGGATE_TLS_GENERATE") {
        config.tls.generate = match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad("LOGGATE_TLS_GENERATE", v, "expected true or false")),
        };
    }
    if let Some(v) = get(env, "LOGGATE_METRICS_BIND") {
        config.metrics.bind = match v.trim() {
            "off" | "none" => None,
            _ => Some(socket_addr("LOGGATE_METRICS_BIND", v)?),
        };
    }
    if let Some(v) = get(env, "LOGGATE_LOG_FORMAT") {
        config.log.format = match v.trim().to_ascii_lowercase().as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            _ => return Err(bad("LOGGATE_LOG_FORMAT", v, "expected human or json")),
        };
    }
    if let Some(v) = get(env, "LOGGATE_CLICKHOUSE_URLS") {
        config.clickhouse.urls =
            v.split([',', ' ']).map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    }
    if let Some(v) = get(env, "LOGGATE_CLICKHOUSE_USER") {
        config.clickhouse.user = v.to_owned();
    }
    if let Some(v) = get(env, "LOGGATE_CLICKHOUSE_PASSWORD") {
        config.clickhouse.password = v.to_owned();
    }
    if let Some(v) = get(env, "LOGGATE_CLICKHOUSE_CA_FILE") {
        config.clickhouse.ca_file = Some(PathBuf::from(v));
    }
    Ok(())
}

/// `LOGGATE_ADVERTISED_HOST` first, then the first listener's, then each protocol's: the
/// most specific variable wins.
fn apply_listener_overrides(config: &mut Config, env: &Env) -> Result<(), EnvError> {
    if let Some(host) = get(env, "LOGGATE_ADVERTISED_HOST") {
        let host = host.trim();
        if host.is_empty() || host.contains(['/', ' ']) {
            return Err(bad("LOGGATE_ADVERTISED_HOST", host, "expected a host name or IP address"));
        }
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
        for l in &mut config.listeners {
            let port = l
                .advertised
                .as_deref()
                .and_then(crate::server::parse_host_port)
                .map_or(l.bind.port(), |(_, port)| port);
            l.advertised = Some(format!("{host}:{port}"));
        }
    }
    if let Some(first) = config.listeners.first_mut() {
        if let Some(v) = get(env, "LOGGATE_BIND") {
            first.bind = socket_addr("LOGGATE_BIND", v)?;
        }
        if let Some(v) = get(env, "LOGGATE_ADVERTISED") {
            first.advertised = Some(host_port("LOGGATE_ADVERTISED", v)?);
        }
    }
    for (name, protocol) in PROTOCOLS {
        for kind in ["BIND", "ADVERTISED"] {
            let var = format!("LOGGATE_{kind}_{name}");
            let Some(v) = get(env, &var) else { continue };
            let mut matching = config.listeners.iter_mut().filter(|l| l.protocol == protocol);
            let listener = match (matching.next(), matching.next()) {
                (Some(l), None) => l,
                (None, _) => return Err(EnvError::NoListener { var, protocol }),
                (Some(_), Some(_)) => return Err(EnvError::SeveralListeners { var, protocol }),
            };
            if kind == "BIND" {
                listener.bind = socket_addr(&var, v)?;
            } else {
                listener.advertised = Some(host_port(&var, v)?);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn references_expand_in_string_values_only() {
        let e = env(&[("PW", "s3cr\"et\nx"), ("EMPTY", ""), ("HOST", "ch1")]);
        let text = "# ${NOT_IN_COMMENTS}\n[clickhouse]\npassword = \"${PW}\"\nuser = '${UNSET:-default}'\n\
                    urls = [\"http://${HOST}:8123\", \"http://${EMPTY:-ch2}:8123\"]\n\
                    table = \"$${literal} $x $$ ${EMPTY}end\"\n";
        let out = expand_references(text, &e).unwrap();
        let value: toml::Value = toml::from_str(&out).unwrap();
        let ch = &value["clickhouse"];
        assert_eq!(ch["password"].as_str(), Some("s3cr\"et\nx"));
        assert_eq!(ch["user"].as_str(), Some("default"));
        assert_eq!(ch["urls"][0].as_str(), Some("http://ch1:8123"));
        assert_eq!(ch["urls"][1].as_str(), Some("http://ch2:8123"));
        assert_eq!(ch["table"].as_str(), Some("${literal} $x $$ end"));
        // The layout (and so every line number) is kept.
        assert_eq!(out.lines().count(), text.lines().count());
        assert!(out.starts_with("# ${NOT_IN_COMMENTS}\n[clickhouse]\n"));
    }

    #[test]
    fn references_in_arrays_of_tables_and_inline_tables() {
        let e = env(&[("ADV", "gw1:10012")]);
        let text = "[[listeners]]\nbind = \"0.0.0.0:10012\"\n[[listeners]]\nadvertised = \"${ADV}\"\n\
                    [[cluster.nodes]]\nadvertised = { SASL_SSL = \"${ADV}\" }\n";
        let value: toml::Value = toml::from_str(&expand_references(text, &e).unwrap()).unwrap();
        assert_eq!(value["listeners"][1]["advertised"].as_str(), Some("gw1:10012"));
        assert_eq!(value["cluster"]["nodes"][0]["advertised"]["SASL_SSL"].as_str(), Some("gw1:10012"));
    }

    #[test]
    fn unusable_references_are_errors_naming_the_setting() {
        let e = env(&[]);
        let err = expand_references("[clickhouse]\npassword = \"${CH_PASSWORD}\"\n", &e).unwrap_err();
        assert!(matches!(&err, EnvError::Unset { key, var } if key == "clickhouse.password" && var == "CH_PASSWORD"));
        assert!(err.to_string().contains("CH_PASSWORD is not set"), "{err}");
        let err = expand_references("[[access_keys]]\nallow = [\"a\", \"${X\"]\n", &e).unwrap_err();
        assert!(matches!(&err, EnvError::Unterminated { key } if key == "access_keys[0].allow[1]"), "{err}");
        let err = expand_references("a = \"${1X}\"\n", &e).unwrap_err();
        assert!(matches!(err, EnvError::BadName { .. }));
        // Not TOML: left for the parser to report with its position.
        assert_eq!(expand_references("a = \"${X}\n", &e).unwrap(), "a = \"${X}\n");
    }

    fn load(text: &str, e: &Env) -> Result<Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(&path, e)
    }

    const TWO_LISTENERS: &str = "[[listeners]]\nbind = \"0.0.0.0:10012\"\nadvertised = \"a:10012\"\n\
        [[listeners]]\nbind = \"0.0.0.0:10013\"\nprotocol = \"PLAINTEXT\"\nproject = \"p\"\nadvertised = \"a:10013\"\n\
        [[projects]]\nname = \"p\"\n";

    #[test]
    fn overrides_reach_the_settings_a_container_needs() {
        let e = env(&[
            ("LOGGATE_DATA_DIR", "/data"),
            ("LOGGATE_NODE_ID", "7"),
            ("LOGGATE_ADVERTISED_HOST", "gw.example.com"),
            ("LOGGATE_ADVERTISED_PLAINTEXT", "plain.example.com:9092"),
            ("LOGGATE_BIND_PLAINTEXT", "0.0.0.0:9092"),
            ("LOGGATE_TLS_CERT", "/etc/loggate/tls/server.pem"),
            ("LOGGATE_TLS_KEY", "/etc/loggate/tls/server.key"),
            ("LOGGATE_TLS_GENERATE", "false"),
            ("LOGGATE_METRICS_BIND", "0.0.0.0:9644"),
            ("LOGGATE_LOG_FORMAT", "json"),
            ("LOGGATE_CLICKHOUSE_URLS", "http://ch1:8123, http://ch2:8123"),
            ("LOGGATE_CLICKHOUSE_PASSWORD", "pw"),
            ("LOGGATE_CLICKHOUSE_CA_FILE", "/etc/loggate/tls/clickhouse-ca.pem"),
        ]);
        let c = load(TWO_LISTENERS, &e).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/data"));
        assert_eq!(c.node_id, 7);
        // The host replaced, each listener's port kept; the protocol's own variable wins.
        assert_eq!(c.listeners[0].advertised.as_deref(), Some("gw.example.com:10012"));
        assert_eq!(c.listeners[0].bind, "0.0.0.0:10012".parse().unwrap());
        assert_eq!(c.listeners[1].advertised.as_deref(), Some("plain.example.com:9092"));
        assert_eq!(c.listeners[1].bind, "0.0.0.0:9092".parse().unwrap());
        assert_eq!(c.tls.cert, Some(PathBuf::from("/etc/loggate/tls/server.pem")));
        assert_eq!(c.tls.key, Some(PathBuf::from("/etc/loggate/tls/server.key")));
        assert!(!c.tls.generate);
        assert_eq!(c.metrics.bind, Some("0.0.0.0:9644".parse().unwrap()));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.clickhouse.urls, vec!["http://ch1:8123", "http://ch2:8123"]);
        assert_eq!(c.clickhouse.password, "pw");
        assert_eq!(c.clickhouse.ca_file, Some(PathBuf::from("/etc/loggate/tls/clickhouse-ca.pem")));

        let c = load(TWO_LISTENERS, &env(&[("LOGGATE_METRICS_BIND", "off"), ("LOGGATE_ADVERTISED", "b:1")])).unwrap();
        assert_eq!(c.metrics.bind, None);
        assert_eq!(c.listeners[0].advertised.as_deref(), Some("b:1"));
        assert_eq!(c.listeners[1].advertised.as_deref(), Some("a:10013"));
    }

    #[test]
    fn the_default_listener_takes_overrides_too() {
        let e = env(&[("LOGGATE_BIND", "0.0.0.0:10012"), ("LOGGATE_ADVERTISED_SASL_SSL", "[2001:db8::1]:10012")]);
        let c = Config::from_env(&e).unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].bind, "0.0.0.0:10012".parse().unwrap());
        assert_eq!(c.listeners[0].advertised.as_deref(), Some("[2001:db8::1]:10012"));
        let c = Config::from_env(&env(&[("LOGGATE_BIND", "0.0.0.0:10012"), ("LOGGATE_ADVERTISED_HOST", "::1")])).unwrap();
        assert_eq!(c.listeners[0].advertised.as_deref(), Some("[::1]:10012"));
    }

    #[test]
    fn bad_overrides_are_errors_naming_the_variable() {
        for (var, value, says) in [
            ("LOGGATE_ADVERTISED", "no-port", "LOGGATE_ADVERTISED"),
            ("LOGGATE_BIND", "host:1", "LOGGATE_BIND"),
            ("LOGGATE_ADVERTISED_SSL", "h:1", "no Ssl listener"),
            ("LOGGATE_METRICS_BIND", "9644", "LOGGATE_METRICS_BIND"),
            ("LOGGATE_LOG_FORMAT", "xml", "human or json"),
            ("LOGGATE_TLS_GENERATE", "maybe", "true or false"),
            ("LOGGATE_NODE_ID", "x", "LOGGATE_NODE_ID"),
            ("LOGGATE_NODE_ID", "300", "node_id 300"),
        ] {
            let err = load(TWO_LISTENERS, &env(&[(var, value)])).unwrap_err().to_string();
            assert!(err.contains(says), "{var}={value}: {err}");
        }
        let two_plain = format!("{TWO_LISTENERS}[[listeners]]\nbind = \"127.0.0.1:1\"\nprotocol = \"PLAINTEXT\"\nproject = \"p\"\n");
        let err = load(&two_plain, &env(&[("LOGGATE_ADVERTISED_PLAINTEXT", "h:1")])).unwrap_err();
        assert!(err.to_string().contains("several"), "{err}");
    }

    #[test]
    fn an_address_clients_cannot_dial_is_refused() {
        let err = Config::from_env(&env(&[("LOGGATE_BIND", "0.0.0.0:10012")])).unwrap_err().to_string();
        assert!(err.contains("needs `advertised") && err.contains("LOGGATE_ADVERTISED_SASL_SSL"), "{err}");
        let err = Config::from_env(&env(&[("LOGGATE_ADVERTISED", "0.0.0.0:10012")])).unwrap_err().to_string();
        assert!(err.contains("not one a client can dial"), "{err}");
    }

    #[test]
    fn a_reference_error_names_the_file_and_setting() {
        let err = load("[clickhouse]\npassword = \"${NO_SUCH_VAR_X}\"\n", &env(&[])).unwrap_err().to_string();
        assert!(err.contains("c.toml") && err.contains("clickhouse.password") && err.contains("NO_SUCH_VAR_X"), "{err}");
        let c = load("[clickhouse]\npassword = \"${PW}\"\n", &env(&[("PW", "x\"y")])).unwrap();
        assert_eq!(c.clickhouse.password, "x\"y");
        // A type error after expansion still points at the file's line.
        let err = load("\n\n[clickhouse]\nuser = \"${PW}\"\ntimeout_secs = \"x\"\n", &env(&[("PW", "a")])).unwrap_err();
        assert!(err.to_string().contains("line 5"), "{err}");
    }

    #[test]
    fn only_set_variables_count_as_overrides() {
        let e = env(&[("LOGGATE_ADVERTISED_SASL_SSL", "h:1"), ("LOGGATE_DATA_DIR", ""), ("LOGGATE_BIN", "x")]);
        assert_eq!(overrides_set(&e), vec!["LOGGATE_ADVERTISED_SASL_SSL".to_string()]);
    }
}
