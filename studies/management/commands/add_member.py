"""python manage.py add_member --project NAME --user NAME --role coordinator|annotator|pi|admin [--create]"""

from django.core.management.base import BaseCommand, CommandError

from studies.members import MemberError, add_member
from studies.models import Project, Role


class Command(BaseCommand):
    help = "Add a user to a project with a role (or change their role); --create first creates the user."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project name")
        parser.add_argument("--user", required=True, help="user name")
        parser.add_argument("--role", required=True, choices=[r.value for r in Role])
        parser.add_argument("--create", action="store_true",
                            help="create the user (with an unusable password) if they do not exist")

    def handle(self, *args, project, user, role, create, **options):
        target = Project.objects.filter(name=project).first()
        if target is None:
            raise CommandError(f"no project {project!r}")
        try:
            membership, created_user = add_member(target, user, role, create=create)
        except MemberError as exc:
            raise CommandError(str(exc)) from None
        note = " (user created, no password: set one or use an API token)" if created_user else ""
        self.stdout.write(f"{membership.user.username} is {membership.get_role_display()} in {target.name}{note}")
