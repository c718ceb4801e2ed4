"""How glcleanup talks to GitLab: the REST/GraphQL API and `gitlab-rails runner` with the bundled Ruby."""
