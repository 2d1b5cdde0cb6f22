//! Bearer tokens for the REST API. A token names a role and is signed (HMAC-SHA256) with the
//! cluster's token key, `token.key` in the PKI directory; every controller node holds the same
//! key, so any node checks any token without a lookup, and replacing the key revokes every
//! token at once.
//!
//! A token reads `plx1.ROLE.HOST.EXPIRES.NONCE.MAC`: `HOST` is the hex of the host an agent's
//! or a bootstrap token is bound to (empty for other roles), `EXPIRES` the hex Unix second it
//! stops being valid (0: never), `NONCE` sets apart tokens of the same role (and lets the
//! cluster spend a one-time token), `MAC` signs everything before it.

use std::fmt;
use std::fs;
use std::path::Path;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{io, write_new, PkiError};

const KEY_FILE: &str = "token.key";
const VERSION: &str = "plx1";
/// A longer `Authorization` value is refused before any parsing.
const MAX_TOKEN: usize = 512;

/// What a token's holder may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// Every read, no write.
    Reader,
    /// The agent of one host: register and heartbeat that host, read what it needs, and
    /// create and delete the endpoints (and, for Docker, networks) of that host.
    Agent(String),
    /// Once, before it expires: obtain the agent credentials of one host (its token and its
    /// switch certificate), so no host needs the CA's key.
    Bootstrap(String),
    /// Once, before it expires: obtain what a new controller node needs to join.
    Join,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The role it grants.
    pub role: Role,
    /// What sets it apart from other tokens of its role.
    pub nonce: String,
    /// The Unix second it expires, if it does.
    pub expires: Option<u64>,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Reader => f.write_str("reader"),
            Role::Agent(h) => write!(f, "agent:{h}"),
            Role::Bootstrap(h) => write!(f, "bootstrap:{h}"),
            Role::Join => f.write_str("join"),
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    /// `admin`, `reader`, `agent:HOST`, `bootstrap:HOST` or `join`.
    fn from_str(s: &str) -> Result<Role, String> {
        match s.split_once(':') {
            None if s == "admin" => Ok(Role::Admin),
            None if s == "reader" => Ok(Role::Reader),
            None if s == "join" => Ok(Role::Join),
            Some(("agent", h)) if !h.is_empty() && h.len() <= 63 => Ok(Role::Agent(h.to_string())),
            Some(("bootstrap", h)) if !h.is_empty() && h.len() <= 63 => Ok(Role::Bootstrap(h.to_string())),
            _ => Err(format!("{s:?} is not a role: use admin, reader, agent:HOST, bootstrap:HOST or join")),
        }
    }
}

/// Why a token was refused. Deliberately terse: a caller learns only that it is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a Plexus token at all.
    #[error("not a Plexus token")]
    Malformed,
    /// Well formed, but not signed by this cluster's current key.
    #[error("token not valid for this cluster (revoked, or issued by another)")]
    BadSignature,
    /// Signed, but past its expiry.
    #[error("token expired")]
    Expired,
}

/// The key that signs and checks a cluster's tokens.
pub struct TokenKey {
    key: hmac::Key,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey").finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok())).collect()
}

fn random(n: usize) -> Result<Vec<u8>, PkiError> {
    let mut b = vec![0u8; n];
    SystemRandom::new().fill(&mut b).map_err(|_| PkiError::Cert("no randomness available".into()))?;
    Ok(b)
}

impl TokenKey {
    fn from_secret(secret: &[u8]) -> TokenKey {
        TokenKey { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// The key in `dir`, made there first if there is none (several processes may race: one
    /// writes it, the others read it).
    pub fn open_or_create(dir: &Path) -> Result<TokenKey, PkiError> {
        let path = dir.join(KEY_FILE);
        if !path.exists() {
            fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            match write_new(&path, &hex(&random(32)?), 0o600) {
                Ok(()) => tracing::info!(dir = %dir.display(), "created the cluster's token key"),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&path, e)),
            }
        }
        for _ in 0..100 {
            if let Ok(k) = TokenKey::open(dir) {
                return Ok(k);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        TokenKey::open(dir)
    }

    /// Writes a cluster's token key (hex, as [`TokenKey::open`] reads it) into `dir`.
    pub fn install(dir: &Path, hex_key: &str) -> Result<(), PkiError> {
        let path = dir.join(KEY_FILE);
        match unhex(hex_key.trim()) {
            Some(k) if k.len() >= 32 => write_new(&path, hex_key.trim(), 0o600).map_err(|e| io(&path, e)),
            _ => Err(PkiError::Cert("not a token key".into())),
        }
    }

    /// The key in `dir`.
    pub fn open(dir: &Path) -> Result<TokenKey, PkiError> {
        let path = dir.join(KEY_FILE);
        let text = fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        match unhex(text.trim()) {
            Some(s) if s.len() >= 32 => Ok(TokenKey::from_secret(&s)),
            _ => Err(io(&path, "not a token key (64 hex digits)")),
        }
    }

    /// Replaces the key in `dir` with a new one: every token issued before is refused by a
    /// node once it has loaded the new key (at its next start).
    pub fn rotate(dir: &Path) -> Result<TokenKey, PkiError> {
        let (path, tmp) = (dir.join(KEY_FILE), dir.join(format!("{KEY_FILE}.new")));
        let _ = fs::remove_file(&tmp);
        write_new(&tmp, &hex(&random(32)?), 0o600).map_err(|e| io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        TokenKey::open(dir)
    }

    fn body(role: &Role, expires: u64, nonce: &str) -> String {
        let (name, host) = match role {
            Role::Admin => ("admin", String::new()),
            Role::Reader => ("reader", String::new()),
            Role::Agent(h) => ("agent", hex(h.as_bytes())),
            Role::Bootstrap(h) => ("bootstrap", hex(h.as_bytes())),
            Role::Join => ("join", String::new()),
        };
        format!("{VERSION}.{name}.{host}.{expires:x}.{nonce}")
    }

    /// A new token for `role` that does not expire.
    pub fn issue(&self, role: &Role) -> Result<String, PkiError> {
        self.issue_until(role, None)
    }

    /// A new token for `role`, valid until the Unix second `expires` if given.
    pub fn issue_until(&self, role: &Role, expires: Option<u64>) -> Result<String, PkiError> {
        let body = TokenKey::body(role, expires.unwrap_or(0), &hex(&random(12)?));
        let mac = hmac::sign(&self.key, body.as_bytes());
        Ok(format!("{body}.{}", hex(mac.as_ref())))
    }

    /// The role a token grants, if this key signed it and it has not expired.
    pub fn verify(&self, token: &str) -> Result<Role, TokenError> {
        self.claims(token).map(|c| c.role)
    }

    /// What a token says, if this key signed it and it has not expired.
    pub fn claims(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN || !token.is_ascii() {
            return Err(TokenError::Malformed);
        }
        let (body, mac) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mac = unhex(mac).filter(|m| m.len() == 32).ok_or(TokenError::Malformed)?;
        let parts: Vec<&str> = body.split('.').collect();
        let [VERSION, role, host, expires, nonce] = parts.as_slice() else { return Err(TokenError::Malformed) };
        // The signature first: nothing of an unsigned token is believed.
        hmac::verify(&self.key, body.as_bytes(), &mac).map_err(|_| TokenError::BadSignature)?;
        let expires = u64::from_str_radix(expires, 16).map_err(|_| TokenError::Malformed)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if expires != 0 && now >= expires {
            return Err(TokenError::Expired);
        }
        let bound = || unhex(host).and_then(|h| String::from_utf8(h).ok()).ok_or(TokenError::Malformed);
        let role = match (*role, host.is_empty()) {
            ("admin", true) => Role::Admin,
            ("reader", true) => Role::Reader,
            ("join", true) => Role::Join,
            ("agent", false) => Role::Agent(bound()?),
            ("bootstrap", false) => Role::Bootstrap(bound()?),
            _ => return Err(TokenError::Malformed),
        };
        Ok(Claims { role, nonce: nonce.to_string(), expires: (expires != 0).then_some(expires) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_their_role_only_under_their_key() {
        let dir = std::env::temp_dir().join(format!("plexus-token-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let key = TokenKey::open_or_create(&dir).unwrap();
        for role in [Role::Admin, Role::Reader, Role::Agent("h1".into())] {
            let t = key.issue(&role).unwrap();
            assert_eq!(key.verify(&t), Ok(role.clone()));
            assert_eq!(TokenKey::open(&dir).unwrap().verify(&t), Ok(role), "the key on disk is the same key");
        }
        let expired = key.issue_until(&Role::Join, Some(1)).unwrap();
        assert_eq!(key.verify(&expired), Err(TokenError::Expired));
        let later = key.issue_until(&Role::Bootstrap("h2".into()), Some(u64::MAX / 2)).unwrap();
        let c = key.claims(&later).unwrap();
        assert_eq!((c.role, c.expires), (Role::Bootstrap("h2".into()), Some(u64::MAX / 2)));
        let agent = key.issue(&Role::Agent("h1".into())).unwrap();
        // Changing the host (or the role) breaks the signature.
        let forged = agent.replace(&format!(".{}.", hex(b"h1")), &format!(".{}.", hex(b"h2")));
        assert_eq!(key.verify(&forged), Err(TokenError::BadSignature));
        assert_eq!(key.verify(&agent.replacen("agent", "admin", 1)), Err(TokenError::BadSignature));
        for junk in ["", "plx1", "plx1.admin...", "Bearer x", &"a".repeat(4096), "plx1.admin..0.00.zz"] {
            assert_eq!(key.verify(junk), Err(TokenError::Malformed), "{junk:?}");
        }
        let rotated = TokenKey::rotate(&dir).unwrap();
        assert_eq!(rotated.verify(&agent), Err(TokenError::BadSignature), "rotation revokes every token");
        assert_eq!("agent:h1".parse::<Role>(), Ok(Role::Agent("h1".into())));
        assert!("root".parse::<Role>().is_err() && "agent:".parse::<Role>().is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
