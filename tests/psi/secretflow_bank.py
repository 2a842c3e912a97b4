"""A bank that runs SecretFlow's own `spu` instead of the datazone SDK: docs/psi.md section 6,
step by step, and nothing else (no datazone import; `spu`, `httpx` and `cryptography` only).

Run as a script by tests/psi/test_secretflow_direct.py:

    python secretflow_bank.py ZONE_URL ACCESS_TOKEN PROTOCOL CUSTOMERS_CSV WORKDIR LISTEN_PORT [keep-link-open]

It prints one JSON line: the job as the zone last showed it and the intersection it found.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path

import httpx
import spu.psi as psi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from spu.libspu import link


def self_signed(workdir: Path) -> tuple[Path, Path]:
    """Section 6, step 2: the bank's own link certificate (any self-signed P-256 certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank psi link")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, pem_key = workdir / "inst.crt", workdir / "inst.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return crt, pem_key


def main(
    zone_url: str, token: str, protocol: str, customers: Path, workdir: Path, port: int, *, close_link: bool = True
) -> dict[str, object]:
    http = httpx.Client(base_url=zone_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    codes = customers.read_text().split("\n")[1:]
    n = len([c for c in codes if c])
    crt, key = self_signed(workdir)
    # step 2: create the job
    r = http.post(
        "/v1/psi/jobs",
        json={
            "product": "dishonest-debtor-psi", "purpose": "pre_loan", "set_size": n,
            "peer_address": f"127.0.0.1:{port}", "protocol": protocol,
            "institution_certificate_pem": crt.read_text(), "have_cache": False,
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    zone_crt = workdir / "zone.crt"
    zone_crt.write_text(job["zone_certificate_pem"])
    # step 3: the link (5.3), rank 1, desc.id = job_id
    d = link.Desc()
    d.id = job["job_id"]
    d.add_party("zone", job["zone_address"])
    d.add_party("institution", f"127.0.0.1:{port}")
    d.brpc_channel_protocol = "baidu_std"
    d.connect_retry_interval_ms = 1000
    d.connect_retry_times = int(job["link_timeout_s"])
    d.recv_timeout_ms = 120_000
    d.enable_ssl = True
    for o in (d.client_ssl_opts, d.server_ssl_opts):
        o.cert.certificate_path, o.cert.private_key_path = str(crt), str(key)
        o.verify.ca_file_path, o.verify.verify_depth = str(zone_crt), 1
    lctx = link.create_brpc(d, 1)
    # messages 1-4 of 5.4
    lctx.send(0, job["ticket"])
    if lctx.recv(0) != b"ok":
        raise SystemExit("the zone rejected the ticket: create a new job")
    lctx.send(0, json.dumps({"protocol": job["protocol"], "items": n, "cache": None}))
    plan = json.loads(lctx.recv(0))
    if "error" in plan:
        raise SystemExit(f"the job runs {plan['protocol']}")
    # step 4: the PSI (5.5), as rank 1
    output = workdir / "intersection.csv"
    if job["protocol"] == "unbalanced":
        cache = workdir / "ub-cache"
        cache.mkdir(exist_ok=True)
        modes = (["MODE_OFFLINE_TRANSFER_CACHE"] if plan["transfer_cache"] else []) + ["MODE_ONLINE"]
        for mode in modes:
            config = psi.UbPsiExecuteConfig(
                mode=psi.parse_ub_psi_mode(mode),
                role=psi.UbPsiRole.ROLE_CLIENT,
                server_receive_result=False,
                client_receive_result=True,
                cache_path=str(cache),
                input_params=psi.InputParams(path=str(customers), selected_keys=["uscc"], keys_unique=True),
                output_params=psi.OutputParams(path=str(output), disable_alignment=True),
            )
            psi.ub_psi_execute(config, lctx)
    else:
        config = psi.PsiExecuteConfig(
            protocol_conf=psi.PsiProtocolConfig(
                protocol=psi.PsiProtocol.PROTOCOL_RR22,
                receiver_rank=1,
                broadcast_result=False,
                ecdh_params=psi.EcdhParams(curve=psi.EllipticCurveType.CURVE_25519),
            ),
            input_params=psi.InputParams(path=str(customers), selected_keys=["uscc"], keys_unique=True),
            output_params=psi.OutputParams(path=str(output), disable_alignment=True),
            join_conf=psi.ResultJoinConfig(type=psi.ResultJoinType.JOIN_TYPE_INNER_JOIN),
        )
        psi.psi_execute(config, lctx)
    # step 5: close the link; this is what tells the zone you have your result
    started = time.monotonic()
    if close_link:
        lctx.stop_link()
    stop_seconds = time.monotonic() - started
    # step 6: read the result (section 5.5: a quoted header, then one code a line)
    lines = output.read_text().splitlines()
    header, matched = lines[0], [line.strip('"') for line in lines[1:] if line]
    # step 7: poll the job until it ends
    deadline = time.monotonic() + (60 if close_link else 180)
    while True:
        status = http.get(f"/v1/psi/jobs/{job['job_id']}").json()
        if status["status"] in ("succeeded", "failed", "expired") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    return {"job": status, "header": header, "matched": matched, "stop_seconds": stop_seconds}


if __name__ == "__main__":
    zone_url, token, protocol, customers, workdir, port = sys.argv[1:7]
    # a seventh argument "keep-link-open" skips step 5: a bank that never confirms
    outcome = main(
        zone_url, token, protocol, Path(customers).resolve(), Path(workdir).resolve(), int(port),
        close_link=sys.argv[7:] != ["keep-link-open"],
    )
    print(json.dumps(outcome), flush=True)
    # brpc's static destructors can hang at interpreter exit (section 6): leave at once
    os._exit(0)
