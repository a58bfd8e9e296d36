"""Account mail: the welcome email, queued when a profile is created."""

from vibe.api import EmailTemplate, Field, enqueue_for, hookimpl


@hookimpl
def register_email_templates():
    return [
        EmailTemplate(
            name="welcome", category="transactional", description="Sent once when an account is created.",
            data={"start_path": Field("str", max_length=2000, description="where the button leads, in the app"),
                  "referral_code": Field("str", description="default: the profile's")},
            sample={"start_path": "/workshops/intro", "referral_code": "VIBE1A2B3C4D"},
            prepare=_welcome_data, paths=("start_path",), preference="welcome_emails",
        ),
    ]


async def _welcome_data(tx, profile, data, now):
    if "referral_code" not in data and profile.get("referral_code"):
        data["referral_code"] = profile["referral_code"]
    return data


@hookimpl
async def user_created(ctx, user):
    await enqueue_for(ctx, user.id, "welcome", {}, f"welcome:{user.id}")
