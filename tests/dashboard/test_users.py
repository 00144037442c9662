"""Managing users: only admins; roles as groups; Django's password rules; an admin cannot lock themselves out."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard import roles
from dashboard.forms import UserAddForm
from tests.dashboard.conftest import PASSWORD, client_for, user_with_role

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

NEW_PASSWORD = "another long password 9"


def role_groups(username: str) -> list[str]:
    return sorted(User.objects.get(username=username).groups.values_list("name", flat=True))


def add_data(**fields: str) -> dict[str, str]:
    return {"username": "newbie", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "role": roles.EDITOR} | fields


def edit_data(**fields: str) -> dict[str, str]:
    return {"role": roles.VIEWER, "is_active": "on", "password1": "", "password2": ""} | fields


@pytest.fixture
def someone(db) -> User:
    return user_with_role("sam", roles.EDITOR)


# Who may -----------------------------------------------------------------------------------------

PAGES = [("get", "/users/"), ("get", "/users/new"), ("post", "/users/new"), ("get", "/users/{id}/edit")]
PAGES.append(("post", "/users/{id}/edit"))


@pytest.mark.parametrize("role", ["viewer", "editor", "nobody"])
@pytest.mark.parametrize(("method", "url"), PAGES)
def test_only_admins_may_manage_users(request, someone, role, method, url):
    client = request.getfixturevalue(role)

    response = getattr(client, method)(url.format(id=someone.id), edit_data(role=roles.ADMIN))

    assert response.status_code == 403
    assert role_groups("sam") == [roles.EDITOR]


@pytest.mark.parametrize(("method", "url"), PAGES)
def test_anonymous_visitors_are_sent_to_log_in(client, someone, method, url):
    path = url.format(id=someone.id)

    assert getattr(client, method)(path)["Location"] == f"/login/?next={path}"


# The list ---------------------------------------------------------------------------------------


def test_the_list_shows_each_users_role_and_activity(admin_client_, someone):
    user_with_role("ivy", roles.VIEWER).__class__.objects.filter(username="ivy").update(is_active=False)

    rows = {person.username: (role, person.is_active) for person, role in admin_client_.get("/users/").context["rows"]}

    assert rows == {"ada": ("admin", True), "ivy": ("viewer", False), "sam": ("editor", True)}


def test_a_superuser_without_groups_is_listed_as_admin(admin_client_):
    User.objects.create_superuser("root", password=PASSWORD)

    rows = dict((person.username, role) for person, role in admin_client_.get("/users/").context["rows"])

    assert rows["root"] == "admin"


def test_the_list_runs_as_many_queries_for_many_users_as_for_few(admin_client_, someone):
    def count() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client_.get("/users/").status_code == 200
        return len(captured)

    few = count()
    for n in range(10):
        user_with_role(f"user{n}", roles.ROLE_ORDER[n % 3])

    assert count() == few


def test_the_list_escapes_a_hostile_user_name(admin_client_):
    User.objects.create_user("<script>x</script>", password=PASSWORD)

    html = admin_client_.get("/users/").content.decode()

    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html


# Adding -----------------------------------------------------------------------------------------


def test_adding_a_user_gives_them_the_role_and_a_working_password(admin_client_, client):
    response = admin_client_.post("/users/new", add_data())

    assert response["Location"] == "/users/"
    assert role_groups("newbie") == [roles.EDITOR]
    assert client.login(username="newbie", password=NEW_PASSWORD)


def test_adding_refuses_two_different_passwords(admin_client_):
    response = admin_client_.post("/users/new", add_data(password2="not the same one 5"))

    assert response.context["form"].errors["password2"] == [UserAddForm.error_messages["password_mismatch"]]
    assert not User.objects.filter(username="newbie").exists()


def test_adding_applies_djangos_password_validators(admin_client_):
    response = admin_client_.post("/users/new", add_data(password1="12345678", password2="12345678"))

    assert "This password is entirely numeric." in response.context["form"].errors["password2"]


def test_adding_refuses_a_taken_user_name(admin_client_, someone):
    response = admin_client_.post("/users/new", add_data(username="sam"))

    assert response.context["form"].errors["username"] == ["A user with that username already exists."]


def test_the_add_form_shows_password_rules_as_text(admin_client_):
    html = admin_client_.get("/users/new").content.decode()

    assert "Your password must contain at least 8 characters." in html
    assert "&lt;ul&gt;" not in html and "<li>Your password" not in html


# Editing ----------------------------------------------------------------------------------------


def test_setting_a_role_replaces_the_role_groups(admin_client_, someone):
    admin_client_.post(f"/users/{someone.id}/edit", edit_data(role=roles.ADMIN))

    assert role_groups("sam") == [roles.ADMIN]


def test_setting_a_role_keeps_other_groups(admin_client_, someone):
    someone.groups.add(Group.objects.create(name="on-call"))

    admin_client_.post(f"/users/{someone.id}/edit", edit_data(role=roles.VIEWER))

    assert role_groups("sam") == ["on-call", roles.VIEWER]


def test_deactivating_a_user_stops_their_login(admin_client_, someone, client):
    admin_client_.post(f"/users/{someone.id}/edit", edit_data(role=roles.EDITOR, is_active=""))

    assert not User.objects.get(username="sam").is_active
    assert not client.login(username="sam", password=PASSWORD)


def test_a_new_password_replaces_the_old_one(admin_client_, someone, client):
    admin_client_.post(f"/users/{someone.id}/edit", edit_data(password1=NEW_PASSWORD, password2=NEW_PASSWORD))

    assert client.login(username="sam", password=NEW_PASSWORD)


def test_an_empty_password_keeps_the_old_one(admin_client_, someone, client):
    admin_client_.post(f"/users/{someone.id}/edit", edit_data())

    assert client.login(username="sam", password=PASSWORD)


def test_a_new_password_must_pass_the_validators(admin_client_, someone):
    response = admin_client_.post(f"/users/{someone.id}/edit", edit_data(password1="password", password2="password"))

    assert "This password is too common." in response.context["form"].errors["password1"]


def test_a_new_password_must_be_typed_twice_alike(admin_client_, someone):
    response = admin_client_.post(f"/users/{someone.id}/edit", edit_data(password1=NEW_PASSWORD, password2="other"))

    assert response.context["form"].errors["password2"] == ["The two passwords differ."]


def test_the_edit_form_starts_with_the_users_role(admin_client_, someone):
    assert admin_client_.get(f"/users/{someone.id}/edit").context["form"].initial["role"] == roles.EDITOR


# An admin cannot lock themselves out -------------------------------------------------------------


def test_an_admin_cannot_remove_their_own_admin_role(db):
    ada = user_with_role("ada", roles.ADMIN)

    response = client_for(ada).post(f"/users/{ada.id}/edit", edit_data(role=roles.EDITOR))

    assert response.context["form"].errors["role"] == [
        "You cannot remove your own admin role; ask another admin to do it."
    ]
    assert role_groups("ada") == [roles.ADMIN]


def test_an_admin_cannot_deactivate_themselves(db):
    ada = user_with_role("ada", roles.ADMIN)

    response = client_for(ada).post(f"/users/{ada.id}/edit", edit_data(role=roles.ADMIN, is_active=""))

    assert response.context["form"].errors["is_active"] == [
        "You cannot deactivate yourself; ask another admin to do it."
    ]
    assert User.objects.get(username="ada").is_active


def test_an_admin_changing_their_own_password_stays_logged_in(db):
    ada = user_with_role("ada", roles.ADMIN)
    client = client_for(ada)

    client.post(f"/users/{ada.id}/edit", edit_data(role=roles.ADMIN, password1=NEW_PASSWORD, password2=NEW_PASSWORD))

    assert client.get("/users/").status_code == 200


def test_making_a_user_an_admin_lets_them_reach_the_admin_for_status_pages_and_taking_it_back_does_not(admin_client_):
    user = user_with_role("vera", roles.VIEWER)
    admin_client_.post(f"/users/{user.pk}/edit", {"role": roles.ADMIN, "is_active": "on"})
    user.refresh_from_db()
    assert user.is_staff and user.has_perm("dashboard.change_statuspage")
    admin_client_.post(f"/users/{user.pk}/edit", {"role": roles.EDITOR, "is_active": "on"})
    user.refresh_from_db()
    assert not user.is_staff
