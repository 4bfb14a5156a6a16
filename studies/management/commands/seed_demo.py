"""python manage.py seed_demo: the demo admin and the synthetic demo project (idempotent)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from studies.demo import add_member, ensure_demo_admin, seed_demo_images, seed_demo_project


class Command(BaseCommand):
    help = "Create a demo admin (credentials printed) and a synthetic demo project of about 700 patients."

    def add_arguments(self, parser):
        parser.add_argument("--patients", type=int, default=702)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--phantom-series", type=int, default=2,
                            help="synthetic CT volumes to store for demo exams (default 2)")

    def handle(self, *args, patients, seed, phantom_series, **options):
        user, password = ensure_demo_admin()
        credentials = settings.VAR_DIR / "demo-admin.txt"
        if password:
            credentials.parent.mkdir(parents=True, exist_ok=True)
            credentials.write_text(f"user: {user.username}\npassword: {password}\n")
            credentials.chmod(0o600)
        project, created = seed_demo_project(n_patients=patients, random_state=seed)
        add_member(project, user)
        # Per-vertebra HU of the same synthetic patients, so models can be trained before any image exists.
        from analysis.modeling.demo import seed_demo_measurements

        seed_demo_measurements(project, random_state=seed, n_patients=patients)
        with_images = seed_demo_images(project, n_series=phantom_series, random_state=seed, n_patients=patients)
        state = "created" if created else "already present"
        self.stdout.write(f"demo project '{project.name}' {state} ({project.patients.count()} patients)")
        if with_images:
            self.stdout.write(f"synthetic CT series stored for {', '.join(with_images)}: open the patient's exam, "
                              "'HU', then 'Segment and measure'")
        if password:
            self.stdout.write(self.style.SUCCESS(f"demo admin: user '{user.username}', password '{password}' "
                                                 f"(also in {credentials})"))
        else:
            self.stdout.write(f"demo admin '{user.username}' exists; its password is in {credentials}")
