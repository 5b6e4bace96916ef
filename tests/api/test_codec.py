"""Payload encryption (CAMPAIGN_ENCRYPTION_KEY) and `campaign codec-server`.

The codec alone (round trip, rotation, unknown and wrong keys, malformed settings),
a real campaign on the time-skipping server whose stored history holds no plaintext,
and the codec server under uvicorn on loopback, as the Web UI calls it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticPayloadConverter, pydantic_data_converter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from typer.testing import CliRunner

from campaign_core.codec import (
    ENCODING,
    KEY_ID_METADATA,
    DecryptionError,
    EncryptionCodec,
    EncryptionKeyError,
    codec_from_setting,
    parse_keyring,
)
from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignInput, CampaignStatus, Stage
from campaign_core.ports import free_port
from campaign_core.settings import Settings
from campaign_core.temporal import data_converter
from starter.cli import app as cli_app
from starter.codec_app import create_codec_app
from starter.manager import BadInput, CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB
from tests.fakes.served import serving

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(100, 132))).decode()
MARKER = "Zebracorn Quarterly Outreach"


def codec(setting: str) -> EncryptionCodec:
    c = codec_from_setting(setting)
    assert c is not None
    return c


def payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


# -- the codec ---------------------------------------------------------------------------


async def test_round_trip_hides_the_plaintext_and_names_the_key() -> None:
    c = codec(f"a:{KEY_A}")
    original = [payload(MARKER), payload("second")]
    encrypted = await c.encode(original)
    for p in encrypted:
        assert p.metadata["encoding"] == ENCODING
        assert p.metadata[KEY_ID_METADATA] == b"a"
        assert MARKER.encode() not in p.SerializeToString()
    assert encrypted[0].data != (await c.encode(original))[0].data, "a fresh nonce each time"
    assert await c.decode(encrypted) == original
    plain = payload("written before encryption was on")
    assert await c.decode([plain]) == [plain]


async def test_rotation_reads_old_payloads_and_writes_with_the_new_key() -> None:
    old = await codec(f"A:{KEY_A}").encode([payload(MARKER)])
    rotated = codec(f"B:{KEY_B},A:{KEY_A}")
    assert await rotated.decode(old) == [payload(MARKER)]
    new = await rotated.encode([payload("new")])
    assert new[0].metadata[KEY_ID_METADATA] == b"B"
    assert await rotated.decode(new) == [payload("new")]
    with pytest.raises(DecryptionError, match="key id 'B'"):
        await codec(f"A:{KEY_A}").decode(new)  # the old keyring cannot read the new key


async def test_unknown_key_id_and_wrong_key_are_named_never_shown() -> None:
    encrypted = await codec(f"gone:{KEY_A}").encode([payload(MARKER)])
    with pytest.raises(DecryptionError, match="key id 'gone'") as exc:
        await codec(f"a:{KEY_A}").decode(encrypted)
    assert KEY_A not in str(exc.value)
    with pytest.raises(DecryptionError, match=r"key id 'gone'.*does not decrypt") as exc:
        await codec(f"gone:{KEY_B}").decode(encrypted)  # same id, different key
    assert KEY_B not in str(exc.value)
    relabelled = Payload()
    relabelled.CopyFrom(encrypted[0])
    relabelled.metadata[KEY_ID_METADATA] = b"a"
    with pytest.raises(DecryptionError, match="does not decrypt"):
        await codec(f"a:{KEY_A},gone:{KEY_A}").decode([relabelled])  # the id is authenticated


@pytest.mark.parametrize(("setting", "message"), [
    ("justbase64", "entry 1 has no ':'"),
    (f"a:{KEY_A},b:not*base64", "entry 2 \\(key id 'b'\\): the key is not valid base64"),
    (f"a:{KEY_A},b:{base64.b64encode(b'short').decode()}", "entry 2 \\(key id 'b'\\): the key is 5 bytes"),
    (f"a:{KEY_A},a:{KEY_B}", "entry 2 \\(key id 'a'\\): key id 'a' appears more than once"),
    (f"a:{KEY_A},,b:{KEY_B}", "entry 2 is empty"),
    (f"bad id!:{KEY_A}", "entry 1: the key id must be"),
    (" , ", "holds no key"),
])
def test_malformed_settings_name_the_entry_and_never_the_key(setting: str, message: str) -> None:
    with pytest.raises(EncryptionKeyError, match=message) as exc:
        parse_keyring(setting)
    assert KEY_A not in str(exc.value) and KEY_B not in str(exc.value)


def test_key_formats_and_the_unset_setting() -> None:
    raw = os.urandom(32)
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert parse_keyring(f" k1 : {urlsafe} , k2:{KEY_A}").ids == ("k1", "k2")
    assert codec_from_setting(None) is None and codec_from_setting("  ") is None
    assert KEY_A not in repr(codec(f"a:{KEY_A}")) and KEY_A not in repr(parse_keyring(f"a:{KEY_A}"))


def test_the_data_converter_stays_pydantic_and_adds_the_codec(home: Path, monkeypatch) -> None:
    monkeypatch.delenv("CAMPAIGN_ENCRYPTION_KEY", raising=False)
    assert data_converter(Settings()) is pydantic_data_converter
    monkeypatch.setenv("CAMPAIGN_ENCRYPTION_KEY", f"a:{KEY_A}")
    conv = data_converter(Settings())
    assert conv.payload_converter_class is PydanticPayloadConverter
    assert isinstance(conv.payload_codec, EncryptionCodec)
    assert conv.failure_converter_class is DefaultFailureConverterWithEncodedAttributes
    monkeypatch.setenv("CAMPAIGN_ENCRYPTION_KEY", "a:AAAA")
    with pytest.raises(EncryptionKeyError, match="key id 'a'"):
        data_converter(Settings())


# -- a campaign's history ----------------------------------------------------------------


async def test_history_holds_no_plaintext_and_the_keyed_client_reads_it(
    ts_env, settings, store, prefix, run_workers
) -> None:
    settings.encryption_key = SecretStr(f"a:{KEY_A}")
    enc_client = Client(ts_env.client.service_client, namespace=ts_env.client.namespace,
                        data_converter=data_converter(settings))
    cid = "c-encrypted"
    leads = [{"email": "ana@zebracorn.example", "first_name": "Ana", "company": "Zebracorn"}]
    async with run_workers(enc_client):
        mgr = CampaignManager(settings, client=enc_client, store=store, queue_prefix=prefix,
                              use_search_attributes=False)
        await mgr.start(parse_lead_rows(enumerate(leads, start=2), cid),
                        CampaignOptions(brief="Book a call.", kb=str(KB)), name=MARKER, campaign_id=cid)
        handle = enc_client.get_workflow_handle(campaign_workflow_id(cid), result_type=CampaignStatus)
        for _ in range(400):
            st = await handle.query("status", result_type=CampaignStatus)
            if st.stage is Stage.AWAITING_APPROVAL:
                break
            await asyncio.sleep(0.05)
        assert st.stage is Stage.AWAITING_APPROVAL
        with pytest.raises(BadInput, match="ld_nobody"):  # the update's refusal, decrypted
            await mgr.approve(cid, lead_ids=["ld_nobody"], by="tester")
        await mgr.reject(cid, by="tester", reason="not now")
        final = await handle.result()
    assert final.stage is Stage.REJECTED

    # Temporal holds only ciphertext: read raw, without the codec.
    history = await ts_env.client.get_workflow_handle(campaign_workflow_id(cid)).fetch_history()
    raw = b"".join(e.SerializeToString() for e in history.events)
    for secret in (MARKER, "Zebracorn", "ana@zebracorn.example", "not now"):
        assert secret.encode() not in raw, f"{secret!r} is in the stored history"
    assert ENCODING in raw and b"encryption-key-id" in raw
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.input.payloads[0].metadata["encoding"] == ENCODING
    with pytest.raises(Exception):  # noqa: B017  the plain converter cannot read ciphertext
        await pydantic_data_converter.decode(started.input.payloads, [CampaignInput])
    # The client holding the key reads it back.
    [inp] = await enc_client.data_converter.decode(started.input.payloads, [CampaignInput])
    assert inp.name == MARKER


# -- the codec server --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(settings: Settings, c: EncryptionCodec, **kwargs) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_codec_app(settings, c, **kwargs), client_timeout=10) as client:
        yield client


def as_json(payloads: list[Payload]) -> dict[str, object]:
    return {"payloads": [{"metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                          "data": base64.b64encode(p.data).decode()} for p in payloads]}


async def test_codec_server_decodes_for_the_ui_origin(settings: Settings, monkeypatch) -> None:
    monkeypatch.setenv("TEMPORAL_UI_URL", "http://127.0.0.1:8233")
    ui = Settings()
    c = codec(f"a:{KEY_A}")
    encrypted = await c.encode([payload(MARKER)])
    async with serve(ui, c) as client:
        headers = {"Origin": "http://127.0.0.1:8233", "X-Namespace": "default"}
        resp = await client.post("/decode", json=as_json(encrypted), headers=headers)
        assert resp.status_code == 200, resp.text
        assert resp.headers["access-control-allow-origin"] == "http://127.0.0.1:8233"
        assert resp.headers["access-control-allow-credentials"] == "true"
        [out] = resp.json()["payloads"]
        assert json.loads(base64.b64decode(out["data"])) == MARKER
        assert base64.b64decode(out["metadata"]["encoding"]) == b"json/plain"

        resp = await client.post("/encode", json=as_json([payload("x")]), headers=headers)
        [enc] = resp.json()["payloads"]
        assert base64.b64decode(enc["metadata"]["encoding"]) == ENCODING

        preflight = await client.options("/decode", headers={
            "Origin": "http://localhost:8233", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace"})
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:8233"
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "x-namespace" in allowed and "content-type" in allowed

        other = await client.options("/decode", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers

        unknown = await codec(f"zz:{KEY_B}").encode([payload("y")])
        resp = await client.post("/decode", json=as_json(unknown), headers=headers)
        assert resp.status_code == 400 and "zz" in resp.json()["detail"]
        assert (await client.post("/decode", content=b"nope", headers=headers)).status_code == 400


async def test_codec_server_token_is_opt_in(settings: Settings) -> None:
    c = codec(f"a:{KEY_A}")
    encrypted = await c.encode([payload(MARKER)])
    async with serve(settings, c, token="s3cret") as client:
        assert (await client.post("/decode", json=as_json(encrypted))).status_code == 401
        ok = await client.post("/decode", json=as_json(encrypted),
                               headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_codec_server_refuses_to_start_without_a_key(home: Path, monkeypatch) -> None:
    monkeypatch.delenv("CAMPAIGN_ENCRYPTION_KEY", raising=False)
    result = CliRunner().invoke(cli_app, ["codec-server", "--port", str(free_port())])
    assert result.exit_code == 2 and "CAMPAIGN_ENCRYPTION_KEY" in result.output
    monkeypatch.setenv("CAMPAIGN_ENCRYPTION_KEY", f"a:{KEY_A},b:AAAA")
    result = CliRunner().invoke(cli_app, ["codec-server", "--port", str(free_port())])
    assert result.exit_code == 2 and "entry 2 (key id 'b')" in result.output
    assert KEY_A not in result.output
