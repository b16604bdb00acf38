//! The optional settings file (`GATEWAY_CONFIG`, `--config`): TOML whose keys are the
//! settings' environment names in lower case (`turn_secret = "…"`, `max_viewers = 200`), with
//! a `[streams]` table for the named streams (`cam1 = "rtp://…"`).
//!
//! The file is the lowest layer above the built-in defaults: a flag wins over its environment
//! variable, which wins over the file. It is applied by turning each of its entries that no
//! flag or environment variable already sets into the flag it stands for, so a value from the
//! file is checked by exactly the parser a flag's value is, and an error names the file and
//! the key.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};

use crate::config::Cli;

/// Largest settings file read: a settings file is a few kilobytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why the command line and settings file could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// A flag or environment variable (clap's own message, usage and exit code).
    Args(clap::Error),
    /// The settings file: one line naming the file and, where there is one, the key.
    File(String),
}

/// The command line (`args`, program name first) with the environment, and the settings file
/// they name, if any.
pub fn load_from(args: Vec<OsString>) -> Result<Cli, LoadError> {
    let matches = Cli::command()
        .try_get_matches_from(&args)
        .map_err(LoadError::Args)?;
    let cli = Cli::from_arg_matches(&matches).map_err(LoadError::Args)?;
    let Some(path) = cli.settings.config.clone() else {
        return Ok(cli);
    };
    let text = read_bounded(&path)?;
    let extra = file_flags(&text, &matches).map_err(|e| file_error(&path, &e))?;
    if extra.is_empty() {
        return Ok(cli);
    }
    // The file's flags go first: settings precede the sub-command.
    let mut all = Vec::with_capacity(args.len() + extra.len());
    all.extend(args.first().cloned());
    all.extend(extra.into_iter().map(OsString::from));
    all.extend(args.into_iter().skip(1));
    Cli::try_parse_from(all).map_err(|e| file_error(&path, &e.to_string()))
}

fn file_error(path: &Path, what: &str) -> LoadError {
    let what = what.trim().replace('\n', " ");
    LoadError::File(format!("GATEWAY_CONFIG ({}): {what}", path.display()))
}

fn read_bounded(path: &Path) -> Result<String, LoadError> {
    use std::io::Read as _;
    let f =
        std::fs::File::open(path).map_err(|e| file_error(path, &format!("cannot open: {e}")))?;
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| file_error(path, &format!("cannot read as UTF-8 text: {e}")))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(file_error(
            path,
            &format!("larger than {MAX_FILE_BYTES} bytes; a settings file is a few kilobytes"),
        ));
    }
    Ok(text)
}

/// The flags (`--name=value`) standing for the file's entries that neither a flag nor an
/// environment variable sets, each checked on its own so an error names its key.
fn file_flags(text: &str, matches: &ArgMatches) -> Result<Vec<String>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("not valid TOML: {}", e.to_string().trim()))?;
    let cmd = Cli::command();
    let mut flags = Vec::new();
    for (key, value) in &table {
        let arg = cmd
            .get_arguments()
            .find(|a| {
                a.get_env()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case(key))
            })
            .ok_or_else(|| {
                format!(
                    "unknown setting `{key}` (keys are the settings' environment names in lower \
                     case, e.g. `turn_secret`, `max_viewers`; `gateway --help` lists them)"
                )
            })?;
        let id = arg.get_id().as_str();
        if id == "config" {
            return Err(format!("`{key}` cannot be set in the settings file itself"));
        }
        if matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue; // a flag or the environment wins
        }
        let long = arg
            .get_long()
            .ok_or_else(|| format!("`{key}` cannot be set in the settings file"))?;
        let values = values_of(key, value, matches!(arg.get_action(), ArgAction::Append))?;
        let secret = ["secret", "token", "password"]
            .iter()
            .any(|w| key.to_ascii_lowercase().contains(w));
        for v in values {
            let flag = format!("--{long}={v}");
            // Checked alone, so the message says which key of the file is wrong.
            Cli::try_parse_from(["gateway", flag.as_str()]).map_err(|e| {
                let msg = e.to_string();
                let first = msg.lines().next().unwrap_or_default().trim();
                let first = first.strip_prefix("error: ").unwrap_or(first);
                // A secret's value never reaches a message.
                let first = if secret && !v.is_empty() {
                    first.replace(v.as_str(), "<redacted>")
                } else {
                    first.to_owned()
                };
                format!("`{key}`: {first}")
            })?;
            flags.push(flag);
        }
    }
    Ok(flags)
}

/// A TOML value as the flag values it stands for: a scalar is one; an array is one per
/// element where the setting takes several (`streams`); the `[streams]` table is one
/// `NAME=SOURCE` per entry.
fn values_of(key: &str, value: &toml::Value, many: bool) -> Result<Vec<String>, String> {
    use toml::Value;
    let scalar = |v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Integer(i) => Ok(i.to_string()),
            Value::Float(f) => Ok(f.to_string()),
            Value::Boolean(b) => Ok(b.to_string()),
            Value::Datetime(d) => Ok(d.to_string()),
            Value::Array(_) | Value::Table(_) => {
                Err(format!("`{key}`: expected a string, number or boolean"))
            }
        }
    };
    match value {
        Value::Array(items) if many => items.iter().map(scalar).collect(),
        Value::Table(entries) if many => entries
            .iter()
            .map(|(name, source)| match source {
                Value::String(s) => Ok(format!("{name}={s}")),
                _ => Err(format!(
                    "`{key}.{name}`: expected a string (a source, as in MEDIA_SOURCE)"
                )),
            })
            .collect(),
        Value::Array(_) | Value::Table(_) => {
            Err(format!("`{key}` takes one value, not a list or table"))
        }
        v => scalar(v).map(|s| vec![s]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str, args: &[&str]) -> Result<Cli, LoadError> {
        let dir = std::env::temp_dir().join(format!(
            "gateway-config-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        let mut v: Vec<OsString> = vec!["gateway".into(), "--config".into(), path.into()];
        v.extend(args.iter().map(OsString::from));
        let r = load_from(v);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn file_err(r: Result<Cli, LoadError>) -> String {
        match r {
            Err(LoadError::File(m)) => m,
            Err(LoadError::Args(e)) => panic!("an argument error, not the file's: {e}"),
            Ok(_) => panic!("loaded"),
        }
    }

    #[test]
    fn the_file_sets_what_flags_do_not_and_flags_win() {
        let text = r#"
            max_viewers = 7
            turn_credential_ttl = 600
            turn_host = "turn.example.com"
            media_source = "testsrc"
            stream_fallback = "default"

            [streams]
            cam1 = "rtp://127.0.0.1:5004?codec=h264"
            lobby = "/videos/lobby.ivf"
        "#;
        let cli = with_file(text, &[]).unwrap();
        let s = &cli.settings;
        assert_eq!(s.max_viewers, 7);
        assert_eq!(s.turn_credential_ttl, 600);
        assert_eq!(s.turn_host.as_deref(), Some("turn.example.com"));
        let names: Vec<_> = s.streams.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["cam1", "lobby"]);
        // A flag wins over the file; the file's other keys still apply.
        let cli = with_file(text, &["--max-viewers", "3", "doctor"]).unwrap();
        assert_eq!(cli.settings.max_viewers, 3);
        assert_eq!(cli.settings.turn_credential_ttl, 600);
        assert!(matches!(
            cli.command,
            Some(crate::config::Command::Doctor { .. })
        ));
        // A flag given for a list replaces the file's list rather than adding to it.
        let cli = with_file(text, &["--stream", "x=testsrc"]).unwrap();
        let names: Vec<_> = cli
            .settings
            .streams
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["x"]);
    }

    #[test]
    fn pull_ca_file_from_the_file() {
        let cli = with_file("pull_ca_file = \"/etc/gateway/origin-ca.pem\"", &[]).unwrap();
        assert_eq!(
            cli.settings.pull_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/gateway/origin-ca.pem"))
        );
    }

    #[test]
    fn whip_takeover_from_the_file() {
        let cli = with_file(
            "whip_takeover = true\nwhip_token = \"file-whip-token-0123456789\"\n\
             streams = [\"cam=whip\"]",
            &[],
        )
        .unwrap();
        assert!(cli.settings.whip_takeover);
        let (_, streams) = cli.settings.whip_tokens().unwrap();
        assert!(matches!(
            streams[0].source,
            crate::media_source::MediaSourceSpec::Whip { takeover: true, .. }
        ));
    }

    #[test]
    fn streams_as_an_array_of_name_source() {
        let cli = with_file(r#"streams = ["a=testsrc", "b=testsrc"]"#, &[]).unwrap();
        assert_eq!(cli.settings.streams.len(), 2);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let m = file_err(with_file("max_viewerz = 3", &[]));
        assert!(
            m.starts_with("GATEWAY_CONFIG (") && m.contains("unknown setting `max_viewerz`"),
            "{m}"
        );
        let m = file_err(with_file("max_viewers = \"many\"", &[]));
        assert!(m.contains("`max_viewers`") && m.contains("many"), "{m}");
        let m = file_err(with_file("max_viewers = [1, 2]", &[]));
        assert!(m.contains("`max_viewers` takes one value"), "{m}");
        let m = file_err(with_file("gateway_config = \"/etc/other.toml\"", &[]));
        assert!(
            m.contains("cannot be set in the settings file itself"),
            "{m}"
        );
        let m = file_err(with_file("max_viewers = ", &[]));
        assert!(m.contains("not valid TOML") && m.contains("line 1"), "{m}");
        let m = file_err(with_file("[streams]\ncam = 5", &[]));
        assert!(m.contains("`streams.cam`"), "{m}");
        let m = file_err(with_file("stream_fallback = \"sometimes\"", &[]));
        assert!(m.contains("`stream_fallback`"), "{m}");
        // Nothing of the file reaches a message but the key and the offending value: a
        // secret elsewhere in the file is not echoed.
        let m = file_err(with_file(
            "turn_secret = \"a-secret-that-must-not-be-echoed\"\nmax_viewers = \"x\"",
            &[],
        ));
        assert!(!m.contains("a-secret-that-must-not-be-echoed"), "{m}");
        // A secret from the file that is refused (too short) is refused by the plan, as from
        // the environment, without its value.
        let cli = with_file("turn_secret = \"short-secret\"", &[]).unwrap();
        let Err(e) = cli.settings.plan() else {
            panic!("a 12-byte TURN_SECRET was accepted")
        };
        let m = e.to_string();
        assert!(
            m.contains("TURN_SECRET") && !m.contains("short-secret"),
            "{m}"
        );
    }

    #[test]
    fn a_missing_or_huge_file_is_refused() {
        let m = file_err(load_from(vec![
            "gateway".into(),
            "--config".into(),
            "/nonexistent/gateway.toml".into(),
        ]));
        assert!(
            m.contains("/nonexistent/gateway.toml") && m.contains("cannot open"),
            "{m}"
        );
        let big = format!("# {}\n", "x".repeat(MAX_FILE_BYTES as usize));
        let m = file_err(with_file(&big, &[]));
        assert!(m.contains("larger than"), "{m}");
    }

    #[test]
    fn without_a_file_the_command_line_is_parsed_as_before() {
        let cli = load_from(vec!["gateway".into(), "--max-viewers".into(), "9".into()]).unwrap();
        assert_eq!(cli.settings.max_viewers, 9);
        assert!(matches!(
            load_from(vec!["gateway".into(), "--max-viewers".into(), "x".into()]),
            Err(LoadError::Args(_))
        ));
    }
}
