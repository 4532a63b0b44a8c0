#!/usr/bin/env bash
# The push step of the bpfship GitHub Action (action.yml): validate, push and sign FILE to REF.
# Inputs come from the environment, as the composite action passes them:
#   FILE, REF             what to push, and where
#   POLICY                policy file checked before pushing (optional)
#   KEY                   private key: a path or env://VAR (default env://COSIGN_PRIVATE_KEY)
#   ALLOW_UNSIGNED        "true" to push unsigned when there is no key; anything else refuses
#   USERNAME              registry user; the password is REGISTRY_PASSWORD
#   BPFSHIP               the bpfship binary
#   GITHUB_OUTPUT         where the step's `digest` output is written
# A missing key secret (a pull request from a fork gets no secrets) is an error, never a silent
# unsigned push: unsigned artifacts are pushed only when ALLOW_UNSIGNED is "true".
set -euo pipefail
args=(push "$FILE" "$REF" --output json)
if [ -n "${POLICY:-}" ]; then args+=(--policy "$POLICY"); fi
key=${KEY:-}
if [ "$key" = "env://COSIGN_PRIVATE_KEY" ] && [ -z "${COSIGN_PRIVATE_KEY:-}" ]; then key=""; fi
if [ -n "$key" ]; then
  args+=(--key "$key")
elif [ "${ALLOW_UNSIGNED:-false}" = "true" ]; then
  echo "::warning::bpfship: pushing $REF unsigned (allow-unsigned is true)" >&2
else
  echo "::error::bpfship: no signing key (the COSIGN_PRIVATE_KEY secret is empty or unset, as in a pull request from a fork); refusing to push $REF unsigned. Set the input allow-unsigned: true to push unsigned on purpose." >&2
  exit 1
fi
if [ -n "${REGISTRY_PASSWORD:-}" ]; then args+=(--username "$USERNAME" --password-stdin); fi
out=$(printf '%s' "${REGISTRY_PASSWORD:-}" | "$BPFSHIP" "${args[@]}")
echo "$out"
echo "digest=$(jq -r .reference <<<"$out")" >> "$GITHUB_OUTPUT"
