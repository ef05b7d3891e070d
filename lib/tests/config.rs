//! Tests of the configuration loader through its public API.
//!
//! Everything sits in `mod config` so that `cargo test config` selects it.

mod config {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use clap::Parser as _;
    use orders::config::{
        ConfigArgs, ConfigError, ONLINE_BOUTIQUE_VARIABLES, Origin, Override, Settings, SslMode,
    };
    use secrecy::ExposeSecret as _;
    use tempfile::TempDir;

    /// A value that must never appear in any output.
    const SECRET: &str = "hunter2-Sup3rSecret";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn args(files: &[&Path], sets: &[&str]) -> ConfigArgs {
        ConfigArgs {
            config: files.iter().map(|path| path.to_path_buf()).collect(),
            set: sets.iter().map(|flag| flag.parse().unwrap()).collect(),
        }
    }

    fn write(dir: &TempDir, name: &str, content: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn load(args: &ConfigArgs, env: &HashMap<String, String>) -> Settings {
        Settings::load_from(args, env).unwrap()
    }

    fn error(args: &ConfigArgs, env: &HashMap<String, String>) -> ConfigError {
        Settings::load_from(args, env).unwrap_err()
    }

    fn password(settings: &Settings) -> Option<&str> {
        settings
            .database
            .password()
            .map(|secret| secret.expose_secret())
    }

    // --- layers, one assertion per boundary --------------------------------

    #[test]
    fn file_overrides_defaults() {
        let dir = TempDir::new().unwrap();
        let file = write(&dir, "a.toml", "[database]\npool_max_size = 4\n");
        assert_eq!(Settings::default().database.pool_max_size, 16);
        assert_eq!(
            load(&args(&[&file], &[]), &env(&[])).database.pool_max_size,
            4
        );
    }

    #[test]
    fn later_file_overrides_earlier_file() {
        let dir = TempDir::new().unwrap();
        let a = write(&dir, "a.toml", "[database]\npool_max_size = 4\n");
        let b = write(&dir, "b.toml", "[database]\npool_max_size = 5\n");
        assert_eq!(
            load(&args(&[&a, &b], &[]), &env(&[]))
                .database
                .pool_max_size,
            5
        );
        assert_eq!(
            load(&args(&[&b, &a], &[]), &env(&[]))
                .database
                .pool_max_size,
            4
        );
    }

    #[test]
    fn secret_file_overrides_file() {
        let dir = TempDir::new().unwrap();
        let secret = write(&dir, "password", "from-secret-file\n");
        let file = write(
            &dir,
            "a.toml",
            &format!(
                "[database]\npassword = \"from-file\"\npassword_file = {:?}\n",
                secret.display().to_string()
            ),
        );
        let settings = load(&args(&[&file], &[]), &env(&[]));
        assert_eq!(password(&settings), Some("from-secret-file"));
    }

    #[test]
    fn environment_overrides_secret_file() {
        let dir = TempDir::new().unwrap();
        let secret = write(&dir, "password", "from-secret-file");
        let secret = secret.to_str().unwrap();
        let settings = load(
            &args(&[], &[&format!("database.password_file={secret}")]),
            &env(&[("BOUTIQUE__DATABASE__PASSWORD", "from-env")]),
        );
        assert_eq!(password(&settings), Some("from-env"));
    }

    #[test]
    fn online_boutique_variable_overrides_environment() {
        let settings = load(
            &args(&[], &[]),
            &env(&[
                ("BOUTIQUE__TELEMETRY__COLLECTOR_ADDR", "boutique:4317"),
                ("COLLECTOR_SERVICE_ADDR", "upstream:4317"),
            ]),
        );
        assert_eq!(settings.telemetry.collector_addr, "upstream:4317");
    }

    #[test]
    fn set_flag_overrides_online_boutique_variable() {
        let settings = load(
            &args(&[], &["telemetry.collector_addr=flag:4317"]),
            &env(&[("COLLECTOR_SERVICE_ADDR", "upstream:4317")]),
        );
        assert_eq!(settings.telemetry.collector_addr, "flag:4317");
    }

    #[test]
    fn environment_key_names_map_to_keys() {
        let settings = load(
            &args(&[], &[]),
            &env(&[
                ("BOUTIQUE__DATABASE__POOL_MAX_SIZE", "4"),
                ("BOUTIQUE__DATABASE__SSLMODE", "verify-full"),
                ("BOUTIQUE__DATABASE__STATEMENT_TIMEOUT", "1500ms"),
                ("BOUTIQUE__MIGRATOR__LOCK_TIMEOUT", "2m"),
                ("BOUTIQUE__ROLES__BACKUP", "reader"),
            ]),
        );
        assert_eq!(settings.database.pool_max_size, 4);
        assert_eq!(settings.database.sslmode, SslMode::VerifyFull);
        assert_eq!(
            settings.database.statement_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(settings.migrator.lock_timeout, Duration::from_secs(120));
        assert_eq!(settings.roles.backup, "reader");
    }

    #[test]
    fn empty_environment_variables_count_as_unset() {
        let dir = TempDir::new().unwrap();
        let file = write(&dir, "a.toml", "[database]\nport = 6000\n");
        let settings = load(
            &args(&[&file], &[]),
            &env(&[
                ("BOUTIQUE__DATABASE__PORT", ""),
                ("DATABASE_URL", ""),
                ("OTEL_SERVICE_NAME", ""),
            ]),
        );
        assert_eq!(settings.database.port, 6000);
        assert_eq!(settings.telemetry.service_name, None);
    }

    #[test]
    fn online_boutique_variables_set_their_keys() {
        let settings = load(
            &args(&[], &[]),
            &env(&[
                ("ENABLE_TRACING", "1"),
                ("COLLECTOR_SERVICE_ADDR", "collector:4317"),
                ("OTEL_SERVICE_NAME", "checkoutservice"),
                ("DATABASE_URL", "postgres://db.example/orders"),
                ("PORT", "7777"),
                ("CART_SERVICE_ADDR", "cart:1"),
                ("PRODUCT_CATALOG_SERVICE_ADDR", "catalog:2"),
                ("CURRENCY_SERVICE_ADDR", "currency:3"),
                ("SHIPPING_SERVICE_ADDR", "shipping:4"),
                ("PAYMENT_SERVICE_ADDR", "payment:5"),
                ("EMAIL_SERVICE_ADDR", "email:6"),
            ]),
        );
        let checkout = &settings.checkout;
        assert_eq!(checkout.port, 7777);
        assert_eq!(
            [
                &checkout.cart_addr,
                &checkout.product_catalog_addr,
                &checkout.currency_addr,
                &checkout.shipping_addr,
                &checkout.payment_addr,
                &checkout.email_addr
            ],
            [
                "cart:1",
                "catalog:2",
                "currency:3",
                "shipping:4",
                "payment:5",
                "email:6"
            ]
        );
        assert!(settings.telemetry.tracing_enabled);
        assert_eq!(settings.telemetry.collector_addr, "collector:4317");
        assert_eq!(
            settings.telemetry.service_name.as_deref(),
            Some("checkoutservice")
        );
        assert_eq!(settings.database.host, "db.example");
        assert_eq!(ONLINE_BOUTIQUE_VARIABLES.len(), 11);
    }

    #[test]
    fn enable_tracing_accepts_1_0_true_false() {
        // `yes`, `no`, `on` and `off` are the `config` crate's own leniency.
        for (value, expected) in [
            ("1", true),
            ("0", false),
            ("true", true),
            ("false", false),
            ("YES", true),
            ("off", false),
        ] {
            let settings = load(&args(&[], &[]), &env(&[("ENABLE_TRACING", value)]));
            assert_eq!(
                settings.telemetry.tracing_enabled, expected,
                "ENABLE_TRACING={value}"
            );
        }
        let message = error(&args(&[], &[]), &env(&[("ENABLE_TRACING", "maybe")])).to_string();
        assert!(message.contains("telemetry.tracing_enabled"), "{message}");
        assert!(
            message.contains("environment variable ENABLE_TRACING"),
            "{message}"
        );
        assert!(message.contains("true or false (or 1 or 0)"), "{message}");
    }

    // --- secret files --------------------------------------------------------

    #[test]
    fn secret_file_named_in_any_layer_is_read_at_the_secret_file_layer() {
        let dir = TempDir::new().unwrap();
        let secret = write(&dir, "checkout", "from-secret-file\n");
        let file = write(
            &dir,
            "a.toml",
            "[roles]\ncheckout_password = \"from-file\"\n",
        );
        // Named by a --set flag, yet still below the environment...
        let settings = load(
            &args(
                &[&file],
                &[&format!(
                    "roles.checkout_password_file={}",
                    secret.display()
                )],
            ),
            &env(&[]),
        );
        let checkout = settings.roles.checkout_password.as_ref().unwrap();
        assert_eq!(checkout.expose_secret(), "from-secret-file");
        // ...and named by the environment, yet still above files.
        let settings = load(
            &args(&[&file], &[]),
            &env(&[(
                "BOUTIQUE__ROLES__CHECKOUT_PASSWORD_FILE",
                secret.to_str().unwrap(),
            )]),
        );
        let checkout = settings.roles.checkout_password.as_ref().unwrap();
        assert_eq!(checkout.expose_secret(), "from-secret-file");
    }

    #[test]
    fn secret_file_loses_one_trailing_newline() {
        let dir = TempDir::new().unwrap();
        for (content, expected) in [
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw", "pw"),
            ("pw\n\n", "pw\n"),
            (" pw ", " pw "),
        ] {
            let secret = write(&dir, "password", content);
            let settings = load(
                &args(
                    &[],
                    &[&format!("database.password_file={}", secret.display())],
                ),
                &env(&[]),
            );
            assert_eq!(password(&settings), Some(expected), "content {content:?}");
        }
    }

    #[test]
    fn unreadable_secret_file_names_key_path_and_reason() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("no-such-file");
        let message = error(
            &args(
                &[],
                &[&format!("roles.backup_password_file={}", missing.display())],
            ),
            &env(&[]),
        )
        .to_string();
        assert!(message.contains("roles.backup_password_file"), "{message}");
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
        let reason = std::fs::read(&missing).unwrap_err().to_string();
        assert!(message.contains(&reason), "{message}");
    }

    // --- DATABASE_URL --------------------------------------------------------

    #[test]
    fn url_expands_into_every_part() {
        let url = "postgresql://us%40er:p%40ss%3Aw%2Fo%25rd+1@[::1]:6543/orders%20db\
                   ?sslmode=verify-full&sslrootcert=/ca.pem&sslcert=/client.pem\
                   &sslkey=/client.key&connect_timeout=7&application_name=check%20out";
        let settings = load(&args(&[], &[]), &env(&[("DATABASE_URL", url)]));
        let database = &settings.database;
        assert_eq!(database.user, "us@er");
        // libpq does not turn `+` into a space.
        assert_eq!(password(&settings), Some("p@ss:w/o%rd+1"));
        assert_eq!(database.host, "::1");
        assert_eq!(database.port, 6543);
        assert_eq!(database.name, "orders db");
        assert_eq!(database.sslmode, SslMode::VerifyFull);
        assert_eq!(database.sslrootcert.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(database.sslcert.as_deref(), Some(Path::new("/client.pem")));
        assert_eq!(database.sslkey.as_deref(), Some(Path::new("/client.key")));
        assert_eq!(database.connect_timeout, Duration::from_secs(7));
        assert_eq!(database.application_name.as_deref(), Some("check out"));
    }

    #[test]
    fn url_accepts_libpq_query_forms() {
        let url = "postgres:///?host=db.example&port=6000&user=u&password=p%26w&dbname=d";
        let settings = load(&args(&[], &[]), &env(&[("DATABASE_URL", url)]));
        assert_eq!(settings.database.host, "db.example");
        assert_eq!(settings.database.port, 6000);
        assert_eq!(settings.database.user, "u");
        assert_eq!(password(&settings), Some("p&w"));
        assert_eq!(settings.database.name, "d");
        // As in libpq, query parameters override the authority.
        let url = "postgres://h1:1/db1?host=h2&port=2&dbname=db2";
        let settings = load(&args(&[], &[]), &env(&[("DATABASE_URL", url)]));
        assert_eq!(settings.database.host, "h2");
        assert_eq!(settings.database.port, 2);
        assert_eq!(settings.database.name, "db2");
    }

    #[test]
    fn url_sets_only_the_parts_it_contains() {
        let dir = TempDir::new().unwrap();
        let file = write(
            &dir,
            "a.toml",
            "[database]\nport = 6000\nuser = \"owner\"\n",
        );
        let settings = load(
            &args(&[&file], &[]),
            &env(&[("DATABASE_URL", "postgres://db.example")]),
        );
        assert_eq!(settings.database.host, "db.example");
        assert_eq!(settings.database.port, 6000);
        assert_eq!(settings.database.user, "owner");
        assert_eq!(settings.database.name, "ordersdb");
        assert_eq!(password(&settings), None);
    }

    #[test]
    fn url_beats_file_and_set_beats_url() {
        let dir = TempDir::new().unwrap();
        let file = write(&dir, "a.toml", "[database]\nhost = \"from-file\"\n");
        let url = env(&[("DATABASE_URL", "postgres://from-url:6000/db")]);
        assert_eq!(load(&args(&[&file], &[]), &url).database.host, "from-url");
        let settings = load(&args(&[&file], &["database.host=from-flag"]), &url);
        assert_eq!(settings.database.host, "from-flag");
        assert_eq!(settings.database.port, 6000);
    }

    #[test]
    fn url_in_a_file_expands_at_that_file() {
        let dir = TempDir::new().unwrap();
        let a = write(
            &dir,
            "a.toml",
            "[database]\nurl = \"postgres://u@from-url:6000/db\"\nport = 7000\n",
        );
        let b = write(&dir, "b.toml", "[database]\nhost = \"from-later-file\"\n");
        let settings = load(&args(&[&a, &b], &[]), &env(&[]));
        assert_eq!(settings.database.host, "from-later-file");
        // A key the URL's own file sets explicitly wins over the URL's part.
        assert_eq!(settings.database.port, 7000);
        assert_eq!(settings.database.user, "u");
    }

    #[test]
    fn url_password_beats_password_file_below_it() {
        let dir = TempDir::new().unwrap();
        let secret = write(&dir, "password", "from-secret-file");
        let file = write(
            &dir,
            "a.toml",
            &format!(
                "[database]\npassword_file = {:?}\n",
                secret.to_str().unwrap()
            ),
        );
        let settings = load(
            &args(&[&file], &[]),
            &env(&[("DATABASE_URL", "postgres://u:from-url@h/db")]),
        );
        assert_eq!(password(&settings), Some("from-url"));
    }

    fn url_error(url: &str) -> String {
        let message = error(&args(&[], &[]), &env(&[("DATABASE_URL", url)])).to_string();
        assert!(message.contains("DATABASE_URL"), "{message}");
        assert!(!message.contains(SECRET), "{message}");
        assert!(!message.contains(url), "{message}");
        message
    }

    #[test]
    fn url_errors_name_the_part_and_what_is_accepted() {
        let message = url_error(&format!("mysql://u:{SECRET}@h/db"));
        assert!(
            message.contains("postgres:// or postgresql://"),
            "{message}"
        );

        let message = url_error(&format!("postgres://u:{SECRET}@h:99999/db"));
        assert!(message.contains("port"), "{message}");
        assert!(message.contains("0..=65535"), "{message}");

        let message = url_error(&format!("postgres://u:{SECRET}@h/db?sslmod=require"));
        assert!(message.contains("`sslmod`"), "{message}");
        assert!(
            message.contains("one of host, port, dbname, user, password, sslmode"),
            "{message}"
        );

        let message = url_error(&format!("postgres://u:{SECRET}@h/db?sslmode=verify_full"));
        assert!(message.contains("`sslmode`"), "{message}");
        assert!(
            message.contains("one of disable, prefer, require, verify-ca, verify-full"),
            "{message}"
        );

        let message = url_error(&format!("postgres://u:{SECRET}@h/db?connect_timeout=5s"));
        assert!(message.contains("`connect_timeout`"), "{message}");
        assert!(message.contains("whole seconds"), "{message}");

        let message = url_error(&format!("postgres://u:{SECRET}@h/db?port=x"));
        assert!(message.contains("`port`"), "{message}");
        assert!(message.contains("0..=65535"), "{message}");

        let message = url_error(&format!("postgres://u:{SECRET}@h/db?sslmode"));
        assert!(message.contains("parameter=value"), "{message}");

        let message = url_error(&format!("postgres://u:{SECRET}%FF@h/db"));
        assert!(message.contains("password"), "{message}");
    }

    #[test]
    fn url_error_from_boutique_variable_names_it() {
        let message = error(
            &args(&[], &[]),
            &env(&[("BOUTIQUE__DATABASE__URL", "postgres://h/db?x=1")]),
        )
        .to_string();
        assert!(
            message.contains("environment variable BOUTIQUE__DATABASE__URL"),
            "{message}"
        );
    }

    // --- unknown keys and bad values -------------------------------------------

    #[test]
    fn unknown_key_in_a_file_is_named() {
        let dir = TempDir::new().unwrap();
        let file = write(&dir, "a.toml", "[database]\nprot = 5432\n");
        let message = error(&args(&[&file], &[]), &env(&[])).to_string();
        assert!(message.contains("`database.prot`"), "{message}");
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(
            message.contains("expected one of host, port, name"),
            "{message}"
        );
    }

    #[test]
    fn unknown_key_in_the_environment_is_named() {
        let message = error(&args(&[], &[]), &env(&[("BOUTIQUE__DATABSE__PORT", "1")])).to_string();
        assert!(message.contains("`databse.port`"), "{message}");
        assert!(
            message.contains("environment variable BOUTIQUE__DATABSE__PORT"),
            "{message}"
        );
        assert!(
            message.contains("expected one of database, roles, telemetry, migrator"),
            "{message}"
        );
    }

    #[test]
    fn unknown_key_in_a_flag_is_named() {
        let message = error(&args(&[], &["telemetry.level=debug"]), &env(&[])).to_string();
        assert!(message.contains("`telemetry.level`"), "{message}");
        assert!(message.contains("--set"), "{message}");
        assert!(
            message.contains("one of log_level, log_format"),
            "{message}"
        );
    }

    #[test]
    fn bad_value_names_key_source_and_accepted_values() {
        let message = error(
            &args(&[], &[]),
            &env(&[("BOUTIQUE__DATABASE__PORT", "abc")]),
        );
        let ConfigError::InvalidValue { key, origin, .. } = &message else {
            panic!("{message}");
        };
        assert_eq!(key, "database.port");
        assert_eq!(origin, &Origin::Env("BOUTIQUE__DATABASE__PORT".into()));
        let message = message.to_string();
        assert!(
            message.contains("environment variable BOUTIQUE__DATABASE__PORT"),
            "{message}"
        );
        assert!(
            message.contains("expected an integer 0..=65535"),
            "{message}"
        );

        let dir = TempDir::new().unwrap();
        let file = write(&dir, "a.toml", "[database]\nsslmode = \"verify_full\"\n");
        let message = error(&args(&[&file], &[]), &env(&[])).to_string();
        assert!(message.contains("`database.sslmode`"), "{message}");
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(
            message.contains("expected one of disable, prefer, require, verify-ca, verify-full"),
            "{message}"
        );

        let message = error(
            &args(&[], &["database.connect_timeout=10 parsecs"]),
            &env(&[]),
        );
        let message = message.to_string();
        assert!(message.contains("`database.connect_timeout`"), "{message}");
        assert!(message.contains("from --set"), "{message}");
        assert!(
            message.contains("expected a duration such as 10s or 500ms"),
            "{message}"
        );
    }

    #[test]
    fn toml_values_are_not_coerced() {
        let dir = TempDir::new().unwrap();
        for value in ["70000", "1.7", "true", "-1", "\"\"", "\"5432\"", "[1]"] {
            let file = write(&dir, "a.toml", &format!("[database]\nport = {value}\n"));
            let message = error(&args(&[&file], &[]), &env(&[])).to_string();
            assert!(message.contains("`database.port`"), "{message}");
            assert!(message.contains(&file.display().to_string()), "{message}");
            assert!(message.contains("an integer 0..=65535"), "{message}");
        }
        let file = write(&dir, "a.toml", "[database]\nhost = 5\n");
        let message = error(&args(&[&file], &[]), &env(&[])).to_string();
        assert!(message.contains("`database.host`"), "{message}");
        assert!(message.contains("a string"), "{message}");
        let file = write(&dir, "a.toml", "[telemetry]\ntracing_enabled = 1\n");
        let message = error(&args(&[&file], &[]), &env(&[])).to_string();
        assert!(message.contains("true or false"), "{message}");
        // A file is checked whole, even where a later layer overrides it.
        let file = write(&dir, "a.toml", "[database]\nport = 1.7\n");
        let message = error(
            &args(&[&file], &[]),
            &env(&[("BOUTIQUE__DATABASE__PORT", "5")]),
        );
        assert!(
            matches!(message, ConfigError::InvalidValue { .. }),
            "{message}"
        );
    }

    #[test]
    fn missing_config_file_is_named() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("missing.toml");
        let error = error(&args(&[&missing], &[]), &env(&[]));
        assert!(matches!(error, ConfigError::ReadFile { .. }), "{error}");
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
        // `load` reads the same way.
        let error = Settings::load(&args(&[&missing], &[])).unwrap_err();
        assert!(matches!(error, ConfigError::ReadFile { .. }), "{error}");
    }

    #[test]
    fn toml_syntax_error_names_file_and_line_but_not_the_line() {
        let dir = TempDir::new().unwrap();
        let file = write(
            &dir,
            "a.toml",
            &format!("[database]\n\npassword = \"{SECRET}\n"),
        );
        let error = error(&args(&[&file], &[]), &env(&[]));
        let ConfigError::ParseFile { line, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(*line, 3);
        let message = error.to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(!message.contains(SECRET), "{message}");
    }

    #[test]
    fn set_flag_needs_an_equals_sign() {
        assert!(matches!(
            "database.port".parse::<Override>(),
            Err(ConfigError::SetSyntax)
        ));
        assert!(matches!(
            "=5".parse::<Override>(),
            Err(ConfigError::SetSyntax)
        ));
        assert_eq!(
            "database.host=a=b".parse::<Override>().unwrap(),
            Override::new("database.host", "a=b")
        );
    }

    // --- secrets never leak ----------------------------------------------------

    #[test]
    fn debug_output_hides_secrets() {
        let dir = TempDir::new().unwrap();
        let secret = write(&dir, "backup", SECRET);
        let settings = load(
            &args(
                &[],
                &[
                    &format!("roles.backup_password_file={}", secret.display()),
                    &format!("roles.checkout_password={SECRET}"),
                ],
            ),
            &env(&[("DATABASE_URL", &format!("postgres://u:{SECRET}@h/db"))]),
        );
        assert_eq!(password(&settings), Some(SECRET));
        let debug = format!("{settings:?}");
        assert!(!debug.contains(SECRET), "{debug}");

        let args = args(
            &[],
            &[&format!("database.password={SECRET}"), "database.port=1"],
        );
        let debug = format!("{args:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("database.port"), "{debug}");
    }

    #[test]
    fn errors_hide_secrets() {
        let dir = TempDir::new().unwrap();
        let mut messages = Vec::new();
        // A secret of the wrong type, in a file and in a URL-shaped key.
        for toml in [
            format!("[database]\npassword = {}\n", 987654321),
            format!("[database]\npassword = [{SECRET:?}]\n"),
            format!("[roles]\ncheckout_password = {{ x = {SECRET:?} }}\n"),
            format!("[database]\nurl = [{SECRET:?}]\n"),
        ] {
            let file = write(&dir, "a.toml", &toml);
            messages.push(error(&args(&[&file], &[]), &env(&[])).to_string());
        }
        assert!(
            messages[0].contains("`database.password`"),
            "{}",
            messages[0]
        );
        assert!(messages[0].contains("[redacted]"), "{}", messages[0]);
        // A misspelt secret key.
        messages.push(
            error(
                &args(&[], &[&format!("database.pasword={SECRET}")]),
                &env(&[]),
            )
            .to_string(),
        );
        // A secret file that is not UTF-8, or not a file.
        let bad = dir.path().join("bad");
        std::fs::write(&bad, [SECRET.as_bytes(), &[0xff]].concat()).unwrap();
        for path in [bad.as_path(), dir.path()] {
            let flag = format!("database.password_file={}", path.display());
            messages.push(error(&args(&[], &[&flag]), &env(&[])).to_string());
        }
        // A bad URL holding the password.
        for url in [
            format!("postgres://u:{SECRET}@h:port/db"),
            format!("postgres://u:{SECRET}@h/db?sslmode=nope"),
            format!("postgres://u:{SECRET}@h/db#fragment"),
            format!("http://u:{SECRET}@h/db"),
            format!("postgres://u:{SECRET}@[::1/db"),
        ] {
            messages.push(error(&args(&[], &[]), &env(&[("DATABASE_URL", &url)])).to_string());
        }
        for message in &messages {
            assert!(!message.contains(SECRET), "{message}");
        }
    }

    #[test]
    fn redacted_toml_hides_secrets() {
        let settings = load(
            &args(
                &[],
                &[
                    &format!("roles.checkout_password={SECRET}"),
                    &format!("roles.backup_password={SECRET}"),
                ],
            ),
            &env(&[("BOUTIQUE__DATABASE__PASSWORD", SECRET)]),
        );
        let printed = settings.to_redacted_toml();
        assert!(!printed.contains(SECRET), "{printed}");
        for key in ["password", "checkout_password", "backup_password"] {
            assert!(
                printed.contains(&format!("\n{key} = \"[redacted]\"\n")),
                "{printed}"
            );
        }
    }

    #[test]
    fn printed_toml_parses_back_to_the_same_settings() {
        let dir = TempDir::new().unwrap();
        let file = write(
            &dir,
            "a.toml",
            "[database]\nsslrootcert = \"/ca.pem\"\napplication_name = \"checkout\"\n\
             statement_timeout = \"1500ms\"\nwait_timeout = \"0s\"\n\
             [telemetry]\nlog_format = \"text\"\nservice_name = \"svc\"\n",
        );
        let settings = load(
            &args(&[&file], &["migrator.lock_timeout=1h 2m 3s"]),
            &env(&[
                (
                    "DATABASE_URL",
                    &format!("postgres://u:{SECRET}@[::1]:6000/db?sslmode=verify-ca"),
                ),
                ("ENABLE_TRACING", "1"),
            ]),
        );
        let printed = settings.to_redacted_toml();
        let parsed: Settings = toml::from_str(&printed).unwrap();
        // Secrets come back as `[redacted]`, which serializes as `[redacted]` again.
        assert_eq!(
            serde_json::to_value(&parsed).unwrap(),
            serde_json::to_value(&settings).unwrap(),
            "{printed}"
        );
        assert_eq!(parsed.migrator.lock_timeout, Duration::from_secs(3723));
        assert_eq!(parsed.database.host, "::1");
        // Defaults, with no secret set, print and parse back too.
        let printed = Settings::default().to_redacted_toml();
        let parsed: Settings = toml::from_str(&printed).unwrap();
        assert_eq!(
            serde_json::to_value(&parsed).unwrap(),
            serde_json::to_value(Settings::default()).unwrap(),
            "{printed}"
        );
    }

    // --- command line ------------------------------------------------------------

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: Option<Command>,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Command {
        Config,
    }

    #[test]
    fn flags_parse_and_repeat() {
        let cli = Cli::try_parse_from([
            "bin",
            "--config",
            "a.toml",
            "--set",
            "database.port=1",
            "--config",
            "b.toml",
            "--set",
            "database.host=h",
            "config",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Config)));
        assert_eq!(
            cli.config.config,
            [PathBuf::from("a.toml"), PathBuf::from("b.toml")]
        );
        assert_eq!(
            cli.config.set,
            [
                Override::new("database.port", "1"),
                Override::new("database.host", "h")
            ]
        );
        assert!(Cli::try_parse_from(["bin", "--set", "database.port"]).is_err());
        // Not global: clap would let a subcommand's values replace the
        // parent's, silently dropping a --config file.
        assert!(Cli::try_parse_from(["bin", "config", "--config", "a.toml"]).is_err());
    }
}
