//! kube-apiserver's `--feature-gates` syntax (`KMSv1=true,OtherGate=false`), for tools that accept
//! the same flag. Only `KMSv1` changes how a config loads; other gates are returned as unknown so a
//! caller can warn about them.

/// The gates found in one or more `--feature-gates` values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureGates {
    /// `KMSv1`, when given.
    pub kms_v1: Option<bool>,
    /// Gates this tool does not know, as written (`Name=value`).
    pub unknown: Vec<String>,
}

/// Parses one flag value into `gates` (later values override earlier ones, as with repeated flags).
/// Values take Go's `strconv.ParseBool` spellings (`true`, `1`, `t`, `FALSE`, ...).
pub fn parse_feature_gates(value: &str, gates: &mut FeatureGates) -> Result<(), String> {
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((name, raw)) = item.split_once('=') else {
            return Err(format!("missing bool value for {item}"));
        };
        let (name, raw) = (name.trim(), raw.trim());
        let enabled = parse_go_bool(raw)
            .ok_or_else(|| format!("invalid value of {name}={raw}, err: strconv.ParseBool: parsing \"{raw}\": invalid syntax"))?;
        if name == "KMSv1" {
            gates.kms_v1 = Some(enabled);
        } else {
            gates.unknown.push(format!("{name}={raw}"));
        }
    }
    Ok(())
}

fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kube_apiserver_syntax() {
        let mut gates = FeatureGates::default();
        parse_feature_gates("KMSv1=true,Foo=false", &mut gates).unwrap();
        assert_eq!(gates.kms_v1, Some(true));
        assert_eq!(gates.unknown, vec!["Foo=false".to_owned()]);
        parse_feature_gates("KMSv1=0", &mut gates).unwrap();
        assert_eq!(gates.kms_v1, Some(false));
    }

    #[test]
    fn rejects_malformed_values() {
        let mut gates = FeatureGates::default();
        assert_eq!(
            parse_feature_gates("KMSv1", &mut gates).unwrap_err(),
            "missing bool value for KMSv1"
        );
        assert!(parse_feature_gates("KMSv1=maybe", &mut gates)
            .unwrap_err()
            .contains("invalid syntax"));
    }
}
