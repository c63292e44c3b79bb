"""Contacts, members and organizations API on SQLite and PostgreSQL."""

from __future__ import annotations


async def test_contacts_crud_and_search(client, tenants):
    h = tenants.alice.headers
    created = await client.post(
        "/api/contacts",
        json={
            "name": "Dana Whitfield",
            "email_addresses": ["Dana@Northwind.example"],
            "company": "Northwind",
        },
        headers=h,
    )
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    assert created.json()["email_addresses"] == ["dana@northwind.example"]
    await client.post(
        "/api/contacts", json={"name": "Kenji Sato", "company": "Sato"}, headers=h
    )
    found = await client.get(
        "/api/contacts", params={"q": "northwind"}, headers=tenants.amy.headers
    )
    assert [c["name"] for c in found.json()["items"]] == ["Dana Whitfield"]
    by_mail = await client.get("/api/contacts", params={"q": "dana@north"}, headers=h)
    assert by_mail.json()["total"] == 1
    patched = await client.patch(
        f"/api/contacts/{cid}", json={"phone": "+1 555"}, headers=tenants.amy.headers
    )
    assert patched.status_code == 200
    assert patched.json()["phone"] == "+1 555"
    assert patched.json()["company"] == "Northwind"
    assert (await client.delete(f"/api/contacts/{cid}", headers=h)).status_code == 204
    assert (await client.get("/api/contacts", headers=h)).json()["total"] == 1


async def test_contact_bad_email_is_422(client, tenants):
    resp = await client.post(
        "/api/contacts",
        json={"name": "X", "email_addresses": ["not-an-email"]},
        headers=tenants.alice.headers,
    )
    assert resp.status_code == 422
    assert "email_addresses" in resp.text


async def test_me_and_organizations(client, tenants):
    me = (await client.get("/api/me", headers=tenants.amy.headers)).json()
    assert me["email"] == "amy@a.test"
    assert me["organization"]["slug"] == "org-a"
    assert me["organization"]["role"] == "member"
    orgs = (await client.get("/api/organizations", headers=tenants.bob.headers)).json()
    assert [o["slug"] for o in orgs] == ["org-b"]


async def test_members_admin_only(client, tenants):
    members = (await client.get("/api/members", headers=tenants.amy.headers)).json()
    assert sorted(m["email"] for m in members) == ["alice@a.test", "amy@a.test"]
    denied = await client.post(
        "/api/members",
        json={"email": "x@a.test", "password": "long-enough"},
        headers=tenants.amy.headers,
    )
    assert denied.status_code == 403
    added = await client.post(
        "/api/members",
        json={
            "email": "Carl@A.test",
            "password": "long-enough",
            "display_name": "Carl",
        },
        headers=tenants.alice.headers,
    )
    assert added.status_code == 201, added.text
    assert added.json()["email"] == "carl@a.test"
    dup = await client.post(
        "/api/members",
        json={"email": "carl@a.test", "password": "long-enough"},
        headers=tenants.alice.headers,
    )
    assert dup.status_code == 409
    carl = added.json()["user_id"]
    promoted = await client.patch(
        f"/api/members/{carl}", json={"role": "admin"}, headers=tenants.alice.headers
    )
    assert promoted.json()["role"] == "admin"
    # an admin cannot hand out super_admin
    sup = await client.patch(
        f"/api/members/{carl}",
        json={"role": "super_admin"},
        headers=tenants.alice.headers,
    )
    assert sup.status_code == 403
    assert (
        await client.delete(f"/api/members/{carl}", headers=tenants.alice.headers)
    ).status_code == 204
    assert (
        len((await client.get("/api/members", headers=tenants.alice.headers)).json())
        == 2
    )


async def test_last_admin_cannot_leave(client, tenants):
    resp = await client.patch(
        f"/api/members/{tenants.bob.ctx.user_id}",
        json={"role": "member"},
        headers=tenants.bob.headers,
    )
    assert resp.status_code == 409
    assert "at least one admin" in resp.json()["detail"]
