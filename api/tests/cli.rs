//! The `stayler-api` binary's commands that need no running service: `check-config` with
//! the development configuration, a broken one and an unknown key, through `--config` and
//! `STAYLER_CONFIG`.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `stayler-api` binary with only `env` in its environment.
pub(crate) fn stayler_api(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stayler-api"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("running stayler-api")
}

/// The development configuration file's path.
pub(crate) fn dev_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.yaml").display().to_string()
}

#[test]
fn check_config_accepts_the_development_configuration_and_prints_no_secret() {
    let checked = stayler_api(&["check-config", "--config", &dev_config()], &[]);
    let out = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{out}{}", String::from_utf8_lossy(&checked.stderr));
    assert!(out.starts_with("the configuration is valid (dev mode)"), "{out}");
    assert!(out.contains("images:    the folder"), "{out}");
    assert!(!out.contains("dev-"), "no secret is printed: {out}");

    // The same through the environment, and an override that selects the object store.
    let on_s3 = [
        ("STAYLER_CONFIG", dev_config()),
        ("STAYLER_STORAGE__BACKEND", "s3".to_owned()),
        ("STAYLER_STORAGE__S3__ENDPOINT", "http://garage:3900".to_owned()),
        ("STAYLER_STORAGE__S3__BUCKET", "images".to_owned()),
        ("STAYLER_STORAGE__S3__ACCESS_KEY_ID", "GK1".to_owned()),
        ("STAYLER_STORAGE__S3__SECRET_ACCESS_KEY", "s3cr3t-s3cr3t".to_owned()),
    ];
    let env: Vec<(&str, &str)> = on_s3.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let checked = stayler_api(&["check-config"], &env);
    let out = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{out}{}", String::from_utf8_lossy(&checked.stderr));
    assert!(out.contains("images:    the bucket images at http://garage:3900"), "{out}");
    assert!(!out.contains("s3cr3t"), "{out}");
}

#[test]
fn check_config_fails_naming_the_key_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let incomplete = dir.path().join("incomplete.yaml");
    let dev = std::fs::read_to_string(dev_config()).unwrap();
    std::fs::write(&incomplete, dev.replacen("storage:\n", "storage:\n  backend: s3\n", 1)).unwrap();
    let checked = stayler_api(&["check-config", "--config", incomplete.to_str().unwrap()], &[]);
    assert_eq!(checked.status.code(), Some(1));
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(err.contains("storage.s3.bucket"), "{err}");

    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(&unknown, dev.replacen("storage:\n", "storage:\n  basePth: /x\n", 1)).unwrap();
    let checked = stayler_api(&["check-config", "--config", unknown.to_str().unwrap()], &[]);
    assert_eq!(checked.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&checked.stderr).contains("basePth"), "an unknown key is named");
}
