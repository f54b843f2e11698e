//! Who is calling: the bearer token's caller (admin or one tenant), tokens and their hashes.

use super::*;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin token.
    Admin,
    /// A tenant's token.
    Tenant(String),
}

/// The SHA-256 of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The form a token is stored in: its SHA-256, in hex.
pub fn stored_token(token: &str) -> String {
    hex(&token_hash(token))
}

/// A new random token with a readable prefix.
pub fn new_token(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::random();
    format!("{prefix}{}", hex(&bytes))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m.to_string());
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| unauthorized("send Authorization: Bearer <token>"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be Bearer <token>"))?;
        let hash = token_hash(token);
        if bool::from(hash.ct_eq(&state.admin_hash)) {
            return Ok(Caller::Admin);
        }
        match state.store.tenant_for_token(&hex(&hash)).await? {
            Some(tenant) => Ok(Caller::Tenant(tenant)),
            None => Err(unauthorized("the token is not valid")),
        }
    }
}

impl Caller {
    pub(super) fn admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this call needs the admin token")),
        }
    }

    /// The tenant, if the caller may see it; otherwise 404, as for a tenant that does not exist.
    pub(super) async fn tenant(&self, store: &Store, id: &str) -> Result<Tenant, ApiError> {
        self.may_see(id)?;
        store.tenant(id).await?.ok_or_else(|| ApiError::not_found(format!("no tenant {id:?}")))
    }

    /// 404 (as for a tenant that does not exist) unless the caller may see tenant `id`.
    pub(super) fn may_see(&self, id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Tenant(own) if own != id => Err(ApiError::not_found(format!("no tenant {id:?}"))),
            _ => Ok(()),
        }
    }
}
