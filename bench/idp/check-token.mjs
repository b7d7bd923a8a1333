// bench/idp.sh sanity check: verifies an access token against the issuer's published JWKS as an
// RFC 9068 resource server would (ES256 only, typ at+jwt, iss, aud "orders", scope orders:read).
// Usage: node check-token.mjs <issuer> <jwks_uri> <token>. Prints the header and claims; exits 1
// on any failure.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [issuer, jwksUri, token] = process.argv.slice(2);
try {
  const { payload, protectedHeader } = await jwtVerify(token, createRemoteJWKSet(new URL(jwksUri)), {
    issuer,
    audience: 'orders',
    algorithms: ['ES256'],
    typ: 'at+jwt',
  });
  if (!String(payload.scope ?? '').split(' ').includes('orders:read')) throw new Error(`scope is ${payload.scope}`);
  if (payload.client_id !== 'bench') throw new Error(`client_id is ${payload.client_id}`);
  console.log(JSON.stringify({ header: protectedHeader, claims: payload }));
} catch (e) {
  console.error(`token check failed for ${issuer}: ${e.message}`);
  process.exit(1);
}
