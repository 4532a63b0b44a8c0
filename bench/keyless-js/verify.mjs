// The reference for bench/keyless.sh: sigstore-js (@sigstore/verify) verifies a keyless bundle
// offline against a trusted root, requiring an identity and an issuer, as `bpfship verify-blob
// --trusted-root R --bundle B --certificate-identity I --certificate-oidc-issuer U FILE` does.
//
// Usage: node verify.mjs TRUSTED_ROOT.json BUNDLE.json FILE IDENTITY ISSUER [REPEAT]
// With REPEAT, verifies that many times in-process and prints the best time per verification.
import { readFileSync } from 'node:fs';

import { bundleFromJSON } from '@sigstore/bundle';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';

const [rootPath, bundlePath, filePath, identity, issuer, repeat] = process.argv.slice(2);
if (!issuer) {
  console.error('usage: node verify.mjs TRUSTED_ROOT.json BUNDLE.json FILE IDENTITY ISSUER [REPEAT]');
  process.exit(2);
}
const policy = { subjectAlternativeName: identity, extensions: { issuer } };
const once = () => {
  const trust = toTrustMaterial(TrustedRoot.fromJSON(JSON.parse(readFileSync(rootPath, 'utf8'))));
  const bundle = bundleFromJSON(JSON.parse(readFileSync(bundlePath, 'utf8')));
  const entity = toSignedEntity(bundle, readFileSync(filePath));
  return new Verifier(trust).verify(entity, policy);
};
try {
  const signer = once();
  if (repeat) {
    let best = Infinity;
    for (let i = 0; i < Number(repeat); i++) {
      const t0 = process.hrtime.bigint();
      once();
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
    }
    console.log(best.toFixed(6));
  } else {
    const { subjectAlternativeName, extensions } = signer.identity;
    console.log(JSON.stringify({ verified: true, subjectAlternativeName, issuer: extensions?.issuer }));
  }
} catch (e) {
  console.error(`verify.mjs: ${e.code ?? e.name}: ${e.message}`);
  process.exit(1);
}
