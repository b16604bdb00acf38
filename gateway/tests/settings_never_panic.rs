//! No setting value can crash start-up: arbitrary Unicode strings (and a few hand-picked
//! nasty ones, such as the `stunéx` that once hit a byte-slicing panic) are fed to every flag
//! of the gateway and to [`Settings::plan`](gateway::config::Settings::plan), the one
//! validation `gateway` and `gateway doctor` share. Each either parses or gives an error
//! that names the setting; none panics.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use clap::{CommandFactory, Parser};
use gateway::config::Cli;
use proptest::prelude::*;

/// Every long flag that takes a value, with the environment variable it reads.
fn flags() -> Vec<(String, Option<String>)> {
    Cli::command()
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
        .filter_map(|a| {
            let long = a.get_long()?.to_owned();
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            Some((long, env))
        })
        .collect()
}

/// Parses `--flag value` and runs the start-up checks; panics only if the gateway would.
fn check(flag: &str, env: Option<&str>, value: &str) {
    let args = ["gateway".to_owned(), format!("--{flag}"), value.to_owned()];
    let outcome = catch_unwind(AssertUnwindSafe(|| match Cli::try_parse_from(&args) {
        Ok(cli) => {
            let s = cli.settings;
            let _ = s.secrets();
            let _ = s.check_port_ranges();
            let _ = s.policy();
            let _ = s.turn_uris();
            let _ = s.stun_probes();
            let _ = gateway::signaling::cors::layer(s.cors_origins.as_deref());
            // The one validated plan that `gateway` and `gateway doctor` run with: when it
            // refuses a value, the error names a setting.
            match s.plan() {
                Ok(plan) => {
                    let _ = plan.ice.turn_targets("doctor", 1_000_000);
                    Ok(None)
                }
                Err(e) => Ok(Some((e.setting, e.to_string()))),
            }
        }
        Err(e) => Err(e.to_string()),
    }));
    let result = outcome.unwrap_or_else(|_| panic!("--{flag} {value:?} panicked"));
    if let Ok(Some((setting, msg))) = &result {
        assert!(
            msg.starts_with(&format!("invalid {setting}: "))
                && !setting.is_empty()
                && setting.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "--{flag} {value:?}: plan error does not name a setting: {msg}"
        );
    }
    if let Err(msg) = result {
        // clap names the flag; our parsers' messages go into clap's "invalid value" line.
        let names_it = msg.contains(&format!("--{flag}"))
            || env.is_some_and(|e| msg.contains(e))
            || msg.contains("unexpected argument");
        assert!(
            names_it,
            "--{flag} {value:?}: error does not name the setting: {msg}"
        );
    }
}

#[test]
fn hand_picked_values_never_panic() {
    let nasty = [
        "stunéx",
        "[{\"urls\":\"stunéx\"}]",
        "[{\"urls\":[\"turnsé:x\"],\"username\":\"u\",\"credential\":\"c\"}]",
        "é",
        "",
        " ",
        "-",
        "0",
        "65536",
        "1-0",
        "ü-ä",
        "::ffff:1.2.3.4/200",
        "[::1]:é",
        "rtp://é:5004?codec=h264",
        "rtp://127.0.0.1:99999",
        "\u{0}",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "a,b,,c",
        "*,https://x",
    ];
    for (flag, env) in flags() {
        for v in nasty {
            check(&flag, env.as_deref(), v);
        }
    }
}

/// The values that once panicked are refused with an error naming their setting.
#[test]
fn stun_e_x_is_an_error_naming_the_setting() {
    for (flag, value) in [
        ("--stun-server", "stunéx"),
        ("--ice-servers", "[{\"urls\":\"stunéx\"}]"),
        ("--ice-servers", "[{\"urls\":\"stun:stunéx\"}]"),
    ] {
        let e = Cli::try_parse_from(["gateway", flag, value])
            .err()
            .unwrap_or_else(|| panic!("{flag} {value} was accepted"))
            .to_string();
        assert!(e.contains(flag), "{flag} {value}: {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_unicode_never_panics(value in "\\PC{0,40}", prefix in prop::sample::select(vec![
        "", "stun:", "turn:", "turns:", "rtp://", "[", "10.0.0.0/", "[{\"urls\":\"", "50000-",
    ])) {
        let value = format!("{prefix}{value}");
        for (flag, env) in flags() {
            check(&flag, env.as_deref(), &value);
        }
    }
}
